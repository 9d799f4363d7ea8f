//! Gathering work into batches: what the write path's two batching tasks
//! (a node's writer, the leader's appender) share.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::registry::{approx_key_bytes, InstanceKey};

/// Hands every run of items waiting on `queue` (at most `max`) to `handle`,
/// whose work runs in a task of its own, with at most `in_flight` runs
/// under way: what arrives meanwhile waits, and goes in the next run.
/// Returns once every sender is gone.
pub async fn in_batches<T, F, W>(
    mut queue: mpsc::UnboundedReceiver<T>,
    max: usize,
    in_flight: usize,
    handle: F,
) where
    F: Fn(Vec<T>) -> W,
    W: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut taken = Vec::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut taken, max).await == 0 {
            return;
        }
        let work = handle(std::mem::take(&mut taken));
        tokio::spawn(async move {
            let _slot = slot;
            work.await;
        });
    }
}

/// Cuts items into groups of about `max` bytes at most, in order; an item
/// larger than `max` makes a group of its own.
pub fn split_by_size<T>(
    items: impl Iterator<Item = T>,
    size: impl Fn(&T) -> usize,
    max: usize,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        match groups.last_mut() {
            Some(group) if bytes + n <= max => {
                bytes += n;
                group.push(item);
            }
            _ => {
                bytes = n;
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// Cuts the keys of one renew or eviction round into runs that each fit
/// one log entry of `entry_bytes` (`limits.entry_bytes`): a million
/// instances renew about 17,000 keys a half second, over a megabyte.
pub fn keys_in_entries(keys: Vec<InstanceKey>, entry_bytes: usize) -> Vec<Vec<InstanceKey>> {
    in_entries(keys, approx_key_bytes, entry_bytes)
}

/// Cuts the items one command lists into runs that each fit one log entry
/// of `entry_bytes`, leaving room for the command around them; `size` is
/// an item's share as [`crate::registry::Command::approx_bytes`] counts it.
pub fn in_entries<T>(items: Vec<T>, size: impl Fn(&T) -> usize, entry_bytes: usize) -> Vec<Vec<T>> {
    // Room for the command around the items (its stamps, its names).
    const AROUND: usize = 256;
    split_by_size(
        items.into_iter(),
        size,
        entry_bytes.saturating_sub(AROUND).max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_cut_into_groups_of_bounded_size_in_order() {
        let groups = split_by_size(0..10, |_| 3, 12);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let order: Vec<i32> = groups.into_iter().flatten().collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        // An item larger than the bound is a group of its own.
        let groups = split_by_size([1, 100, 1].into_iter(), |n| *n, 2);
        assert_eq!(groups, [vec![1], vec![100], vec![1]]);
    }

    #[test]
    fn a_round_of_keys_is_cut_into_commands_that_each_fit_an_entry() {
        use crate::registry::{validate, Command, Limits, Rules};
        let keys: Vec<InstanceKey> = (0..20_000)
            .map(|i| InstanceKey {
                env: "prod".into(),
                appid: "main.account.service".into(),
                zone: "sh001".into(),
                hostname: format!("host-{i:06}.example.internal"),
            })
            .collect();
        let limits = Limits {
            entry_bytes: 64 << 10,
            ..Limits::DEFAULT
        };
        let rules = Rules {
            max_clock_skew: 0,
            limits,
        };
        let whole = Command::Renew {
            keys: keys.clone(),
            at: 1,
        };
        assert!(validate(&whole, 1, &rules).is_err(), "one command for all");
        let runs = keys_in_entries(keys.clone(), limits.entry_bytes);
        assert!(runs.len() > 10, "{} runs", runs.len());
        for run in &runs {
            let command = Command::Renew {
                keys: run.clone(),
                at: 1,
            };
            validate(&command, 1, &rules).unwrap();
            let bytes = serde_json::to_vec(&command).unwrap().len();
            assert!(bytes <= limits.entry_bytes, "{bytes} bytes");
        }
        assert_eq!(runs.concat(), keys);
    }

    #[tokio::test]
    async fn waiting_items_go_in_one_run_while_one_is_under_way() {
        let (queue, waiting) = mpsc::unbounded_channel();
        let (runs, mut seen) = mpsc::unbounded_channel();
        let (release, hold) = tokio::sync::watch::channel(false);
        queue.send(0).unwrap();
        let task = tokio::spawn(in_batches(waiting, 100, 1, move |run: Vec<i32>| {
            let runs = runs.clone();
            let mut hold = hold.clone();
            async move {
                runs.send(run).unwrap();
                let _ = hold.wait_for(|r| *r).await;
            }
        }));
        assert_eq!(seen.recv().await.unwrap(), [0]);
        // The first run is under way: these wait, and go together.
        for i in 1..=5 {
            queue.send(i).unwrap();
        }
        release.send(true).unwrap();
        assert_eq!(seen.recv().await.unwrap(), [1, 2, 3, 4, 5]);
        drop(queue);
        task.await.unwrap();
    }
}
