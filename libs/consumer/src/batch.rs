//! Which fetched inbox rows a drain transaction may apply: per stream, the
//! run that continues the version its state reflects, without a gap. Pure,
//! so the rule is tested without a database.

/// A row fetched for draining, with what its stream's state reflected when
/// it was fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<T> {
    /// Its stream, as an index into the streams asked for.
    pub stream: usize,
    /// Its version in the stream.
    pub version: i64,
    /// The version the stream's state reflected.
    pub current: i64,
    /// The row.
    pub row: T,
}

/// Keep, per stream, the rows `current + 1`, `current + 2`, … up to the
/// first gap, in stream order then version order. A later row is only
/// applied after its predecessor: one missing (not arrived, dead, or being
/// applied by another replica right now) stops its stream there.
pub fn contiguous<T>(mut rows: Vec<Candidate<T>>) -> Vec<Candidate<T>> {
    rows.sort_by_key(|c| (c.stream, c.version));
    let mut kept: Vec<Candidate<T>> = Vec::with_capacity(rows.len());
    let mut expected: Option<(usize, i64)> = None;
    for c in rows {
        let next = match expected {
            Some((stream, version)) if stream == c.stream => version,
            _ => c.current + 1,
        };
        if c.version == next {
            expected = Some((c.stream, next + 1));
            kept.push(c);
        } else if expected.map(|(s, _)| s) != Some(c.stream) {
            // The stream's first row is not the next one: nothing of this
            // stream now (the marker stops its later rows as well).
            expected = Some((c.stream, i64::MIN));
        }
    }
    kept
}

/// Rows to fetch per stream so that one stream with a long backlog (or a
/// gap before many rows) cannot take the whole batch from the others.
pub fn window(streams: usize, batch: usize) -> usize {
    (batch / streams.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(stream: usize, version: i64, current: i64) -> Candidate<()> {
        Candidate {
            stream,
            version,
            current,
            row: (),
        }
    }

    fn kept(rows: Vec<Candidate<()>>) -> Vec<(usize, i64)> {
        contiguous(rows)
            .into_iter()
            .map(|c| (c.stream, c.version))
            .collect()
    }

    #[test]
    fn a_run_after_the_current_version_is_kept_up_to_its_first_gap() {
        let rows = vec![c(0, 4, 3), c(0, 5, 3), c(0, 7, 3), c(0, 8, 3)];
        assert_eq!(kept(rows), vec![(0, 4), (0, 5)]);
    }

    #[test]
    fn a_stream_whose_next_row_is_missing_gives_nothing() {
        let rows = vec![c(0, 5, 3), c(0, 6, 3), c(1, 1, 0)];
        assert_eq!(kept(rows), vec![(1, 1)]);
    }

    #[test]
    fn streams_keep_their_order_and_rows_are_sorted_by_version() {
        let rows = vec![c(1, 2, 0), c(0, 10, 9), c(1, 1, 0), c(2, 3, 2)];
        assert_eq!(kept(rows), vec![(0, 10), (1, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn a_duplicate_version_is_applied_once() {
        let rows = vec![c(0, 1, 0), c(0, 1, 0), c(0, 2, 0)];
        assert_eq!(kept(rows), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn the_window_shares_a_batch_between_streams_and_is_never_zero() {
        assert_eq!(window(1, 100), 100);
        assert_eq!(window(4, 100), 25);
        assert_eq!(window(300, 100), 1);
        assert_eq!(window(0, 100), 100);
    }
}
