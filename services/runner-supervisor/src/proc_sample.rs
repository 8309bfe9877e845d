//! CPU and memory of a runner's processes, read from `/proc`: the shim's
//! descendants (it is their subreaper, so an orphaned grandchild still
//! counts), the shim itself left out.

use std::collections::BTreeMap;

/// (parent pid, CPU ticks (utime + stime), resident pages) of a process.
fn stat_of(pid: i32) -> Option<(i32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last closing parenthesis.
    let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // rest[0] is the state (field 3); ppid is field 4, utime 14, stime 15,
    // rss 24.
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ppid = rest.get(1)?.parse().ok()?;
    Some((ppid, field(14)? + field(15)?, field(24)?))
}

/// Every process's (parent, ticks, pages), read once per sampling.
#[must_use]
pub fn snapshot() -> BTreeMap<i32, (i32, u64, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat_of(pid)?)))
        .collect()
}

/// CPU seconds and resident bytes of every descendant of `root` in
/// `procs` (not `root` itself).
#[must_use]
pub fn tree_usage(procs: &BTreeMap<i32, (i32, u64, u64)>, root: i32) -> (f64, u64) {
    let ticks_per_second = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, (ppid, _, _)) in procs {
        children.entry(*ppid).or_default().push(*pid);
    }
    let (mut ticks, mut pages) = (0_u64, 0_u64);
    let mut todo = children.get(&root).cloned().unwrap_or_default();
    while let Some(pid) = todo.pop() {
        if let Some((_, t, p)) = procs.get(&pid) {
            ticks += t;
            pages += p;
        }
        todo.extend(children.get(&pid).cloned().unwrap_or_default());
    }
    (ticks as f64 / ticks_per_second, pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_sums_its_descendants_and_leaves_out_its_root() {
        let procs = BTreeMap::from([
            (10, (1, 500, 100)),
            (11, (10, 100, 10)),
            (12, (11, 50, 5)),
            (20, (1, 7, 7)),
        ]);
        let (cpu, rss) = tree_usage(&procs, 10);
        let hz = rustix::param::clock_ticks_per_second() as f64;
        assert!((cpu - 150.0 / hz).abs() < 1e-9);
        assert_eq!(rss, 15 * rustix::param::page_size() as u64);
    }

    #[test]
    fn this_process_is_found_with_memory() {
        let me = i32::try_from(std::process::id()).unwrap();
        let procs = snapshot();
        let (_, _, pages) = procs.get(&me).copied().unwrap();
        assert!(pages > 0);
    }
}
