//! Fair shares: what one client may take of what all share (held polls,
//! connections, new registrations), and how often one kind of warning is
//! logged. Counters only, free of I/O: the HTTP layer and the accept loop
//! ask them and answer.
//!
//! A client is its address: an IPv4 address, or an IPv6 /64 (one host
//! commonly holds a whole /64, and would otherwise count as 2^64 clients).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The client an address counts as (see the module's notes).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A count of things held at once (held polls), at most `total` in all
/// and `per_client` for any one client.
pub struct Shares {
    total: usize,
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    all: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a share was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every share is taken: `(held, total)`.
    Full(usize, usize),
    /// This client holds its whole share: `(held, per_client)`.
    ClientFull(usize, usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full(held, total) => write!(f, "{held} held, at most {total}"),
            Refused::ClientFull(held, most) => {
                write!(f, "{held} held by this address, at most {most} per address")
            }
        }
    }
}

/// One thing held; given back when dropped.
pub struct Share {
    shares: Arc<Shares>,
    client: IpAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock();
        held.all -= 1;
        if let Some(n) = held.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

impl Shares {
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Shares {
            total,
            per_client: per_client.min(total),
            held: Mutex::new(Held::default()),
        })
    }

    /// One more for the client at `ip`, if both bounds allow.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Share, Refused> {
        let client = client_of(ip);
        let mut held = self.held.lock();
        if held.all >= self.total {
            return Err(Refused::Full(held.all, self.total));
        }
        let mine = held.by_client.entry(client).or_insert(0);
        if *mine >= self.per_client {
            return Err(Refused::ClientFull(*mine, self.per_client));
        }
        *mine += 1;
        held.all += 1;
        Ok(Share {
            shares: self.clone(),
            client,
        })
    }

    /// Held now, in all.
    pub fn held(&self) -> usize {
        self.held.lock().all
    }
}

/// Bytes that answers being sent may hold at once (`fetch/all` keeps the
/// apps it lists as they were when asked until the client has read them):
/// at most `max` in all, and a quarter of it for one client. An answer
/// larger than that is still served when nothing else is held (by anyone,
/// or by its client), so that no registry is too large to list.
pub struct Budget {
    max: usize,
    per_client: usize,
    used: Mutex<Held>,
}

/// Bytes taken from a [`Budget`]; given back when dropped (when the
/// answer holding them was sent, or its connection closed).
pub struct Spend {
    budget: Arc<Budget>,
    client: IpAddr,
    bytes: usize,
}

impl Drop for Spend {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock();
        used.all -= self.bytes;
        if let Some(n) = used.by_client.get_mut(&self.client) {
            *n -= self.bytes;
            if *n == 0 {
                used.by_client.remove(&self.client);
            }
        }
    }
}

impl Budget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Budget {
            max,
            per_client: (max / 4).max(1),
            used: Mutex::new(Held::default()),
        })
    }

    /// `bytes` for an answer to `ip`, or what is in the way.
    pub fn take(self: &Arc<Self>, ip: IpAddr, bytes: usize) -> Result<Spend, Refused> {
        let client = client_of(ip);
        let mut used = self.used.lock();
        let mine = used.by_client.get(&client).copied().unwrap_or(0);
        if mine > 0 && mine + bytes > self.per_client {
            return Err(Refused::ClientFull(mine, self.per_client));
        }
        if used.all > 0 && used.all + bytes > self.max {
            return Err(Refused::Full(used.all, self.max));
        }
        used.all += bytes;
        *used.by_client.entry(client).or_insert(0) += bytes;
        Ok(Spend {
            budget: self.clone(),
            client,
            bytes,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.lock().all
    }
}

/// A token bucket per key: `per_sec` on average, `burst` at once.
pub struct Rate<K> {
    per_sec: f64,
    burst: f64,
    /// Keys tracked at most; past it, buckets that refilled are dropped
    /// (they are as good as new), then the least recently used.
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Rate<K> {
    pub fn new(per_sec: f64, burst: u32, max_keys: usize) -> Self {
        Rate {
            per_sec,
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; when there is none, how long
    /// until there is.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_sec.max(1e-9);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }

    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let full_after = self.burst / self.per_sec.max(1e-9);
        buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < full_after);
        if buckets.len() >= self.max_keys {
            if let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.buckets.lock().len()
    }
}

/// The pace of new instances (hostnames not registered yet): per client
/// address and per app, so that one client cannot flood the registry with
/// instances that never renew, and one app cannot take every client's.
pub struct NewInstances {
    pub per_client: Rate<IpAddr>,
    pub per_app: Rate<(String, String)>,
}

impl NewInstances {
    /// Keys each rate tracks at most.
    const KEYS: usize = 65_536;

    pub fn new(per_client: (u32, u32), per_app: (u32, u32)) -> Self {
        NewInstances {
            per_client: Rate::new(f64::from(per_client.0), per_client.1, Self::KEYS),
            per_app: Rate::new(f64::from(per_app.0), per_app.1, Self::KEYS),
        }
    }

    /// One more new instance of `env`/`appid` from `ip`, or why not.
    pub fn take(&self, ip: IpAddr, env: &str, appid: &str, now: Instant) -> Result<(), String> {
        let client = client_of(ip);
        if let Err(wait) = self.per_client.take(&client, now) {
            return Err(format!(
                "too many new instances from {client}: at most {}/s (connections.new_instances_per_sec); try again in {} ms",
                self.per_client.per_sec,
                wait.as_millis().max(1)
            ));
        }
        let app = (env.to_string(), appid.to_string());
        if let Err(wait) = self.per_app.take(&app, now) {
            return Err(format!(
                "too many new instances of {appid}: at most {}/s (connections.new_instances_per_app_per_sec); try again in {} ms",
                self.per_app.per_sec,
                wait.as_millis().max(1)
            ));
        }
        Ok(())
    }
}

/// At most one log line per kind in `every`: a flood of one fault (a
/// thousand sockets that never finish a handshake, a wrong token sent in a
/// loop) costs one line per interval, which says how many were not logged.
pub struct Throttle {
    every: Duration,
    kinds: usize,
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            kinds: 256,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log this kind now; if so, how many of it were held back
    /// since the last line. Past 256 kinds, new kinds are not logged.
    pub fn allow(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut last = self.last.lock();
        if last.len() >= self.kinds && !last.contains_key(kind) {
            return None;
        }
        match last.get_mut(kind) {
            Some((at, skipped)) if now.saturating_duration_since(*at) < self.every => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let held_back = *skipped;
                *at = now;
                *skipped = 0;
                Some(held_back)
            }
            None => {
                last.insert(kind.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(client_of(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff::9")),
            client_of(ip("2001:db8:1:2::7"))
        );
        assert_eq!(client_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn one_client_takes_its_share_and_the_others_still_get_theirs() {
        let shares = Shares::new(10, 4);
        let a: Vec<Share> = (0..4)
            .map(|_| shares.take(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            shares.take(ip("10.0.0.1")).err(),
            Some(Refused::ClientFull(4, 4))
        );
        let b: Vec<Share> = (0..4)
            .map(|_| shares.take(ip("10.0.0.2")).unwrap())
            .collect();
        let c: Vec<Share> = (0..2)
            .map(|_| shares.take(ip("10.0.0.3")).unwrap())
            .collect();
        assert_eq!(
            shares.take(ip("10.0.0.4")).err(),
            Some(Refused::Full(10, 10))
        );
        drop(a);
        assert_eq!(shares.held(), 6);
        assert!(shares.take(ip("10.0.0.1")).is_ok());
        drop((b, c));
        assert_eq!(shares.held(), 0);
        assert!(shares.held.lock().by_client.is_empty());
    }

    #[test]
    fn answers_share_a_budget_and_one_client_takes_a_quarter_of_it() {
        let budget = Budget::new(1000);
        let a = budget.take(ip("10.0.0.1"), 200).unwrap();
        assert_eq!(
            budget.take(ip("10.0.0.1"), 100).err(),
            Some(Refused::ClientFull(200, 250))
        );
        let b = budget.take(ip("10.0.0.2"), 250).unwrap();
        let c = budget.take(ip("10.0.0.3"), 250).unwrap();
        let d = budget.take(ip("10.0.0.4"), 250).unwrap();
        assert_eq!(
            budget.take(ip("10.0.0.5"), 100).err(),
            Some(Refused::Full(950, 1000))
        );
        drop((a, b, c, d));
        assert_eq!(budget.used(), 0);
        // Alone, an answer larger than the whole budget still goes.
        let huge = budget.take(ip("10.0.0.5"), 5000).unwrap();
        assert!(budget.take(ip("10.0.0.6"), 1).is_err());
        drop(huge);
        assert!(budget.used.lock().by_client.is_empty());
    }

    #[test]
    fn a_rate_allows_its_burst_then_its_pace_per_key() {
        let rate = Rate::new(10.0, 5, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            rate.take(&"a", t0).unwrap();
        }
        let wait = rate.take(&"a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another key has its own bucket.
        rate.take(&"b", t0).unwrap();
        // A tenth of a second later: one more.
        let t1 = t0 + Duration::from_millis(100);
        rate.take(&"a", t1).unwrap();
        assert!(rate.take(&"a", t1).is_err());
    }

    #[test]
    fn a_rate_keeps_a_bounded_number_of_keys() {
        let rate = Rate::new(1.0, 1, 100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let _ = rate.take(&i, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(rate.keys() <= 100, "{} keys", rate.keys());
    }

    #[test]
    fn a_throttle_logs_once_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow("handshake", t0), Some(0));
        for _ in 0..999 {
            assert_eq!(t.allow("handshake", t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(t.allow("token", t0), Some(0));
        assert_eq!(
            t.allow("handshake", t0 + Duration::from_secs(11)),
            Some(999)
        );
    }
}
