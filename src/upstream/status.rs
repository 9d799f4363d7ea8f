//! How the link with an original is doing, as this node sees it: for
//! `/admin/status`, `discoveryctl upstream` and the metrics. Only the
//! leader works the link; every other node says `standby`.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;

use crate::telemetry::UpstreamLabels;

/// One direction of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Switched off in the configuration.
    Off,
    /// Not the leader: another node works the link.
    Standby,
    /// Taking the first whole copy, or a comparison under way.
    Syncing,
    /// In step: every change seen is applied.
    Following,
    /// The last call to the original failed; retried.
    Failing,
}

impl State {
    /// The metric's value: 1 in step, 0 failing or syncing, -1 not worked here.
    pub fn gauge(self) -> i64 {
        match self {
            State::Following => 1,
            State::Syncing | State::Failing => 0,
            State::Off | State::Standby => -1,
        }
    }
}

#[derive(Debug)]
struct Side {
    state: State,
    /// Since when a change of one side is not yet on the other.
    behind_since: Option<Instant>,
    last_error: Option<String>,
    errors: u64,
    /// Calls that succeeded: batches applied (import), instances
    /// registered, renewed or cancelled there (export).
    done: u64,
}

impl Side {
    fn new(on: bool) -> Self {
        Side {
            state: if on { State::Standby } else { State::Off },
            behind_since: None,
            last_error: None,
            errors: 0,
            done: 0,
        }
    }
}

/// One direction as shown.
#[derive(Clone, Debug, Serialize)]
pub struct SideView {
    pub state: State,
    /// The age of the oldest change not yet carried over, in ms (0 when
    /// in step).
    pub lag_ms: u64,
    pub error: Option<String>,
    pub errors: u64,
    pub done: u64,
}

/// The link with one original.
#[derive(Debug)]
pub struct Link {
    pub name: String,
    import: Mutex<Side>,
    export: Mutex<Side>,
    /// Failed calls, by direction (the metric).
    errors: Family<UpstreamLabels, Counter>,
}

/// Which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Import,
    Export,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Import => "import",
            Direction::Export => "export",
        }
    }
}

impl Link {
    /// A link doing `import` and/or `export`, counting failures into
    /// `errors`.
    pub fn new(
        name: &str,
        import: bool,
        export: bool,
        errors: Family<UpstreamLabels, Counter>,
    ) -> Self {
        Link {
            name: name.to_string(),
            import: Mutex::new(Side::new(import)),
            export: Mutex::new(Side::new(export)),
            errors,
        }
    }

    pub fn labels(&self, d: Direction) -> UpstreamLabels {
        UpstreamLabels {
            upstream: self.name.clone(),
            direction: d.label(),
        }
    }

    fn side(&self, d: Direction) -> &Mutex<Side> {
        match d {
            Direction::Import => &self.import,
            Direction::Export => &self.export,
        }
    }

    pub fn state(&self, d: Direction, state: State) {
        self.side(d).lock().state = state;
    }

    /// Something changed on one side that the other does not have yet,
    /// since `at` (kept if already behind).
    pub fn behind(&self, d: Direction, at: Instant) {
        let mut s = self.side(d).lock();
        s.behind_since = Some(s.behind_since.map_or(at, |b| b.min(at)));
    }

    /// Everything seen is carried over.
    pub fn in_step(&self, d: Direction, done: u64) {
        let mut s = self.side(d).lock();
        s.behind_since = None;
        s.state = State::Following;
        s.last_error = None;
        s.done += done;
    }

    /// Some work done, more still to do.
    pub fn did(&self, d: Direction, done: u64) {
        self.side(d).lock().done += done;
    }

    pub fn failed(&self, d: Direction, error: String, since: Instant) {
        let mut s = self.side(d).lock();
        s.state = State::Failing;
        s.last_error = Some(error);
        s.errors += 1;
        self.errors.get_or_create(&self.labels(d)).inc();
        s.behind_since = Some(s.behind_since.map_or(since, |b| b.min(since)));
    }

    pub fn view(&self, d: Direction) -> SideView {
        let s = self.side(d).lock();
        SideView {
            state: s.state,
            lag_ms: s.behind_since.map_or(0, |b| b.elapsed().as_millis() as u64),
            error: s.last_error.clone(),
            errors: s.errors,
            done: s.done,
        }
    }
}

/// The age of a change stamped `at` (nanoseconds since the epoch) on this
/// node's clock, as an instant.
pub fn since_stamp(at: i64) -> Instant {
    let age = crate::clock::now().saturating_sub(at).max(0) as u64;
    Instant::now()
        .checked_sub(Duration::from_nanos(age))
        .unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_change_not_carried_over() {
        let link = Link::new("old", true, false, Family::default());
        assert_eq!(link.view(Direction::Export).state, State::Off);
        assert_eq!(link.view(Direction::Import).state, State::Standby);
        let earlier = Instant::now() - Duration::from_millis(500);
        link.behind(Direction::Import, Instant::now());
        link.behind(Direction::Import, earlier);
        assert!(link.view(Direction::Import).lag_ms >= 500);
        link.failed(Direction::Import, "refused".into(), Instant::now());
        let v = link.view(Direction::Import);
        assert_eq!((v.state, v.errors), (State::Failing, 1));
        assert!(v.lag_ms >= 500, "a failure keeps the oldest");
        link.in_step(Direction::Import, 3);
        let v = link.view(Direction::Import);
        assert_eq!((v.state, v.lag_ms, v.done), (State::Following, 0, 3));
        assert!(v.error.is_none());
    }
}
