-- Budgets as the orchestrator's decisions made them (from its own log):
-- the definition each decision reads, its stream's version, and the alerts
-- it raised per period (so each fires once per budget and period, and a
-- rebuild, which replays the same events, agrees).
CREATE TABLE budgets (
    budget_id     uuid PRIMARY KEY,
    scope         text NOT NULL,
    target        text,
    period        text NOT NULL,
    time_zone     text NOT NULL,
    limit_tokens  bigint,
    limit_usd     double precision,
    warn_percent  smallint NOT NULL,
    action        text NOT NULL,
    version       bigint NOT NULL,
    deleted       boolean NOT NULL DEFAULT false
);

CREATE TABLE budget_alerts (
    budget_id     uuid NOT NULL,
    period_start  timestamptz NOT NULL,
    kind          text NOT NULL,
    PRIMARY KEY (budget_id, period_start, kind)
);

-- Spending as it happened, one row per usage or reconciliation event
-- received from a node (keyed by the event's id, so folding one twice
-- changes nothing), at the event's own time. A budget's usage is the sum
-- over its period, joined to `runners` for its scope at read time: rows
-- need no budget to exist, so a budget created or raised mid-period counts
-- the whole period, and a rebuild gives the same sums.
CREATE TABLE budget_spend (
    message_id  uuid PRIMARY KEY,
    runner_id   uuid NOT NULL,
    time        timestamptz NOT NULL,
    tokens      bigint NOT NULL,
    cost_usd    double precision NOT NULL
);
CREATE INDEX budget_spend_by_time ON budget_spend (time);
CREATE INDEX budget_spend_by_runner ON budget_spend (runner_id, time);
CREATE INDEX runners_by_profile ON runners (profile);
