//! The arithmetic of following a transcript: lines cut from the bytes a
//! node serves, each with its offset, and the cursor that tells a live line
//! already sent (or one that leaves a gap) from the next one. Offsets count
//! bytes from the start of an attempt's part of its session transcript,
//! on the node and in every live line alike.

use stratavore_events::process::RunnerOutput;

/// One line of a runner's output, as the API sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The attempt that wrote it.
    pub attempt: u32,
    /// Where it starts in the attempt's part.
    pub offset: u64,
    /// Where the next line starts.
    pub next: u64,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// The lines of `bytes`, served from `from` in `attempt`'s part. A node
/// serves whole lines, except at the end of an ended attempt
/// (`final_part`: its last line may lack a newline) and when one line is
/// longer than the window asked for (the bytes hold no newline at all):
/// both are kept as a line. Any other unfinished tail is left for the
/// next read.
pub fn split_part(attempt: u32, from: u64, bytes: &[u8], final_part: bool) -> Vec<LogLine> {
    let mut lines = Vec::new();
    let mut start = 0usize;
    while let Some(newline) = bytes[start..].iter().position(|b| *b == b'\n') {
        let end = start + newline;
        lines.push(line_at(attempt, from, bytes, start, end, end + 1));
        start = end + 1;
    }
    let tail_is_a_line = final_part || lines.is_empty();
    if start < bytes.len() && tail_is_a_line {
        lines.push(line_at(
            attempt,
            from,
            bytes,
            start,
            bytes.len(),
            bytes.len(),
        ));
    }
    lines
}

fn line_at(
    attempt: u32,
    from: u64,
    bytes: &[u8],
    start: usize,
    end: usize,
    next: usize,
) -> LogLine {
    LogLine {
        attempt,
        offset: from + start as u64,
        next: from + next as u64,
        text: String::from_utf8_lossy(&bytes[start..end]).into_owned(),
    }
}

/// What to do with a live line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveStep {
    /// Send it: it is the next line.
    Send(LogLine),
    /// Already sent (or of an attempt left behind).
    Skip,
    /// Lines are missing before it (lost on the way, or of a new attempt),
    /// or it was cut: read the transcript from the cursor on.
    Gap,
}

/// How far a follower has been sent: the next byte of which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The attempt followed.
    pub attempt: u32,
    /// The offset of the next line to send.
    pub next: u64,
}

impl Cursor {
    /// Whether `line` (read from a node) is still to be sent.
    pub fn wants(&self, line: &LogLine) -> bool {
        line.attempt > self.attempt || (line.attempt == self.attempt && line.offset >= self.next)
    }

    /// `line` was sent.
    pub fn sent(&mut self, line: &LogLine) {
        self.attempt = line.attempt;
        self.next = line.next;
    }

    /// The cursor moves to the start of a later attempt.
    pub fn start_attempt(&mut self, attempt: u32) {
        if attempt > self.attempt {
            self.attempt = attempt;
            self.next = 0;
        }
    }

    /// What to do with a line that came live; a line that is sent moves
    /// the cursor.
    pub fn on_live(&mut self, output: &RunnerOutput) -> LiveStep {
        if output.attempt < self.attempt
            || (output.attempt == self.attempt && output.offset < self.next)
        {
            return LiveStep::Skip;
        }
        if output.attempt > self.attempt || output.offset > self.next || output.truncated {
            return LiveStep::Gap;
        }
        let line = LogLine {
            attempt: output.attempt,
            offset: output.offset,
            next: output.offset + output.line.len() as u64 + 1,
            text: output.line.clone(),
        };
        self.sent(&line);
        LiveStep::Send(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn live(attempt: u32, offset: u64, line: &str) -> RunnerOutput {
        RunnerOutput {
            runner_id: Uuid::nil(),
            attempt,
            offset,
            line: line.to_owned(),
            truncated: false,
        }
    }

    #[test]
    fn whole_lines_are_cut_with_their_offsets_and_a_tail_waits() {
        let lines = split_part(2, 10, b"ab\n\ncd\nef", false);
        let got: Vec<(u64, u64, &str)> = lines
            .iter()
            .map(|l| (l.offset, l.next, l.text.as_str()))
            .collect();
        assert_eq!(got, vec![(10, 13, "ab"), (13, 14, ""), (14, 17, "cd")]);
        assert!(lines.iter().all(|l| l.attempt == 2));
    }

    #[test]
    fn the_last_line_of_an_ended_attempt_and_a_line_longer_than_the_window_are_kept() {
        let last = split_part(1, 0, b"ab\ncd", true);
        assert_eq!(last[1].text, "cd");
        assert_eq!(last[1].next, 5);
        let long = split_part(1, 100, b"xxxx", false);
        assert_eq!((long[0].offset, long[0].next), (100, 104));
        assert!(split_part(1, 0, b"", true).is_empty());
    }

    #[test]
    fn a_live_line_already_read_from_the_node_is_sent_once() {
        let mut cursor = Cursor {
            attempt: 1,
            next: 0,
        };
        for line in split_part(1, 0, b"one\ntwo\n", false) {
            assert!(cursor.wants(&line));
            cursor.sent(&line);
        }
        assert_eq!(cursor.on_live(&live(1, 0, "one")), LiveStep::Skip);
        assert_eq!(cursor.on_live(&live(1, 4, "two")), LiveStep::Skip);
        let LiveStep::Send(three) = cursor.on_live(&live(1, 8, "three")) else {
            panic!("the next line is sent")
        };
        assert_eq!((three.offset, three.next), (8, 14));
        assert_eq!(
            cursor.on_live(&live(1, 8, "three")),
            LiveStep::Skip,
            "a duplicate"
        );
        assert_eq!(cursor.next, 14);
    }

    #[test]
    fn a_missing_line_a_cut_line_or_a_new_attempt_is_a_gap_and_an_old_attempt_is_skipped() {
        let mut cursor = Cursor {
            attempt: 2,
            next: 10,
        };
        assert_eq!(cursor.on_live(&live(2, 20, "later")), LiveStep::Gap);
        let cut = RunnerOutput {
            truncated: true,
            ..live(2, 10, "xxx")
        };
        assert_eq!(cursor.on_live(&cut), LiveStep::Gap);
        assert_eq!(cursor.on_live(&live(3, 0, "new")), LiveStep::Gap);
        assert_eq!(cursor.on_live(&live(1, 50, "old")), LiveStep::Skip);
        assert_eq!(cursor.next, 10, "nothing moved the cursor");
        cursor.start_attempt(3);
        assert_eq!((cursor.attempt, cursor.next), (3, 0));
        cursor.start_attempt(2);
        assert_eq!(cursor.attempt, 3, "never backwards");
        let old = LogLine {
            attempt: 2,
            offset: 99,
            next: 100,
            text: String::new(),
        };
        assert!(!cursor.wants(&old));
    }
}
