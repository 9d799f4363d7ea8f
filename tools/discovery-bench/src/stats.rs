//! Latency samples and how they are printed. Every sample is kept (8 bytes
//! each) so percentiles are exact rather than bucketed.

use std::fmt;
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn append(&mut self, other: &mut Latencies) {
        self.0.append(&mut other.0);
    }

    pub fn summary(&mut self) -> Summary {
        self.0.sort_unstable();
        Summary {
            p50: self.percentile(50.0),
            p99: self.percentile(99.0),
            max: self.0.last().copied().unwrap_or(0),
        }
    }

    /// The middle sample, or the mean of the two middle ones.
    pub fn median(&mut self) -> u64 {
        self.0.sort_unstable();
        let n = self.0.len();
        match n {
            0 => 0,
            _ if n % 2 == 1 => self.0[n / 2],
            _ => (self.0[n / 2 - 1] + self.0[n / 2]) / 2,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile of the sorted samples.
    fn percentile(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

/// p50, p99 and max, in nanoseconds.
pub struct Summary {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} p99 {} max {}",
            Ms(self.p50),
            Ms(self.p99),
            Ms(self.max)
        )
    }
}

/// Nanoseconds shown as milliseconds with about three significant digits.
pub struct Ms(pub u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 as f64 / 1e6;
        if ms < 10.0 {
            write!(f, "{ms:.2} ms")
        } else if ms < 100.0 {
            write!(f, "{ms:.1} ms")
        } else {
            write!(f, "{ms:.0} ms")
        }
    }
}

impl From<Duration> for Ms {
    fn from(d: Duration) -> Ms {
        Ms(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Bytes shown as MiB.
pub struct Mib(pub u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} MiB", self.0 as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ms: &[u64]) -> Latencies {
        let mut l = Latencies::default();
        for m in ms {
            l.push(Duration::from_millis(*m));
        }
        l
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(of(&[]).median(), 0);
        assert_eq!(of(&[30, 10, 20]).median(), 20_000_000);
        assert_eq!(of(&[40, 10, 30, 20]).median(), 25_000_000);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = of(&(1..=100).collect::<Vec<_>>());
        let s = l.summary();
        assert_eq!((s.p50, s.p99, s.max), (50_000_000, 99_000_000, 100_000_000));
    }
}
