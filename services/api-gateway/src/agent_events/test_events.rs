//! Runner and process events for the models' unit tests.

use super::{AgentEvent, Said};
use chrono::{DateTime, Utc};
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::RunnerEvent;
use uuid::Uuid;

/// `s` seconds into a fixed day.
pub(crate) fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

/// `runner`'s runner event at `at(s)`.
pub(crate) fn runner_event(runner: Uuid, s: i64, event: RunnerEvent) -> AgentEvent {
    AgentEvent::Runner(Said {
        id: Uuid::now_v7(),
        time: at(s),
        runner_id: runner,
        event,
    })
}

/// `runner`'s process event at `at(s)`.
pub(crate) fn process_event(runner: Uuid, s: i64, event: ProcessEvent) -> AgentEvent {
    AgentEvent::Process(Said {
        id: Uuid::now_v7(),
        time: at(s),
        runner_id: runner,
        event,
    })
}

/// `row`'s fields are named as `columns` (no more, no fewer), and it reads
/// back from its JSON as it was: what moves it to and from its table
/// (`crate::rows`) loses nothing.
pub(crate) fn assert_named_as_columns<R>(row: &R, columns: &[&str])
where
    R: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_value(row).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut columns = columns.to_vec();
    columns.sort_unstable();
    assert_eq!(keys, columns);
    let back: R = serde_json::from_value(json).unwrap();
    assert_eq!(&back, row);
}
