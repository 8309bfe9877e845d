//! Parser tests against recorded and documented Claude Code output.

mod claude_fixtures;
