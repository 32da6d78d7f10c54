//! The request rate on the login endpoints per client address: a token bucket per address
//! (`server.login_rate_per_minute`, burst of the same size), so a client cannot make
//! sidegate spend IdP round trips, XML checks or password hashes without bound. The client
//! address is the peer, or, behind `server.trusted_proxies`, the nearest untrusted address
//! in `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;

/// Buckets by client address.
pub struct LoginLimit {
    per_minute: u32,
    trusted: Vec<IpNet>,
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl LoginLimit {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32, trusted: Vec<IpNet>) -> Self {
        LoginLimit {
            per_minute,
            trusted,
            buckets: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// The address a request is counted against.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect();
        hops.into_iter()
            .rev()
            .map(|a| a.to_canonical())
            .find(|a| !self.is_trusted(*a))
            .unwrap_or(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Takes one request from `client`'s bucket; when empty, how long until one is back.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let bucket = self.buckets.get_with(client, || {
            Arc::new(Mutex::new(Bucket {
                tokens: cap,
                at: now,
            }))
        });
        let mut b = bucket.lock().expect("bucket lock");
        let rate = cap / 60.0;
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - b.tokens) / rate).max(1.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_and_addresses_are_separate() {
        let l = LoginLimit::new(6, vec!["10.0.0.0/8".parse().unwrap()]);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..6 {
            assert!(l.take(a, t0).is_ok());
        }
        let wait = l.take(a, t0).expect_err("bucket empty");
        assert!(
            wait >= Duration::from_secs(9) && wait <= Duration::from_secs(11),
            "{wait:?}"
        );
        assert!(
            l.take("192.0.2.2".parse().unwrap(), t0).is_ok(),
            "another address has its own bucket"
        );
        assert!(
            l.take(a, t0 + Duration::from_secs(10)).is_ok(),
            "one back after 10 s at 6/min"
        );
        assert!(l.take(a, t0 + Duration::from_secs(10)).is_err());
        assert!(
            LoginLimit::new(0, vec![]).take(a, t0).is_ok(),
            "0 turns it off"
        );
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_forwarded_address() {
        let l = LoginLimit::new(6, vec!["10.0.0.0/8".parse().unwrap()]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.1.1.1".parse().unwrap(),
        );
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(
            l.client(proxy, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "a spoofed leftmost entry is ignored"
        );
        let direct: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(
            l.client(direct, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "untrusted peers cannot name another client"
        );
    }
}
