-- Tokens each agent session has used so far, summed over every attempt
-- that ran it (from the nodes' `process.usage_reported`): a resumed attempt
-- is offered its session's totals, for agents that report usage as a
-- running total of the session.
CREATE TABLE session_usage (
    session_id                  text PRIMARY KEY,
    input_tokens                bigint NOT NULL,
    output_tokens               bigint NOT NULL,
    cache_creation_input_tokens bigint NOT NULL,
    cache_read_input_tokens     bigint NOT NULL
);
