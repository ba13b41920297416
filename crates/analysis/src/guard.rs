//! Server-side request forgery guard: lookalike fetches URLs that strangers give it, so it must never
//! be made to reach the machines around it (databases, cloud metadata, admin panels).
//!
//! Checked in three places, so no request is ever sent to a forbidden address:
//! - the URL itself (scheme; hosts written as IP literals, including decimal/octal/hex IPv4 spellings,
//!   which the URL parser already turns into plain addresses);
//! - every DNS answer, at connect time, by the resolver the HTTP client uses (DNS rebinding gets no
//!   second chance: the checked addresses are the ones connected to);
//! - every redirect target, again through both checks above.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use lookalike_core::config;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL was refused; carried through the HTTP client's error chain to become `url_forbidden`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Hosts trusted as written (internal image stores, tests); their addresses are not checked.
    allow_hosts: Vec<String>,
    /// Address ranges trusted despite being internal.
    allow_nets: Vec<IpNet>,
}

impl Guard {
    pub fn from_config(cfg: &config::Fetch) -> anyhow::Result<Self> {
        let allow_nets = cfg
            .allow_cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("fetch.allow_cidrs: {e}"))?;
        Ok(Guard {
            allow_hosts: cfg
                .allow_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_nets,
        })
    }

    fn host_trusted(&self, host: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow_nets.iter().any(|n| n.contains(&ip))
    }

    /// Checks what can be checked before any connection: scheme and IP-literal hosts.
    pub fn check_url(&self, url: &Url) -> Result<(), Forbidden> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Forbidden(format!(
                "scheme `{}` is not allowed",
                url.scheme()
            )));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Forbidden("the URL has no host".into())),
        };
        if self.ip_allowed(ip) || url.host_str().is_some_and(|h| self.host_trusted(h)) {
            Ok(())
        } else {
            Err(Forbidden(format!("{ip} is an internal address")))
        }
    }

    /// The resolver the HTTP client must use: resolves, then refuses any internal answer.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(self.clone()))
    }
}

pub struct GuardedResolver(Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !guard.host_trusted(&host) {
                // One internal answer refuses the host: picking the "good" addresses would let a
                // name that mixes both steer us at will.
                if let Some(bad) = addrs.iter().find(|a| !guard.ip_allowed(a.ip())) {
                    return Err(Box::new(Forbidden(format!(
                        "{host} resolves to internal address {}",
                        bad.ip()
                    )))
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Loopback, private, link-local, CGNAT, unspecified, multicast, documentation and other special
/// ranges, for IPv4 and IPv6 (including IPv4 addresses embedded in IPv6).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfec0 // old site-local fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0 // "this network" 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) || (a == 198 && b == 51 && c == 100) || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || ip.is_multicast()
        || a >= 240 // reserved and broadcast
}

/// IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5].iter().all(|&x| x == 0) && s[5] == 0xffff;
    let compatible = s[..6].iter().all(|&x| x == 0) && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (mapped || compatible || nat64).then_some(tail)
}

/// True when `error`, or anything it wraps, is a [`Forbidden`].
pub fn find_forbidden(error: &(dyn std::error::Error + 'static)) -> Option<Forbidden> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(f) = e.downcast_ref::<Forbidden>() {
            return Some(f.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::default()
    }

    fn refused(url: &str) -> bool {
        guard().check_url(&Url::parse(url).unwrap()).is_err()
    }

    #[test]
    fn internal_ipv4_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "93.184.216.34", "172.32.0.1", "100.128.0.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn internal_ipv6_ranges_and_embedded_ipv4_are_refused() {
        for ip in [
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn odd_ipv4_spellings_are_refused_like_the_plain_ones() {
        for url in [
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://0/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "ftp://example.com/a.jpg",
            "file:///etc/passwd",
        ] {
            assert!(refused(url), "{url}");
        }
        assert!(!refused("https://example.com/a.jpg"));
        assert!(!refused("http://93.184.216.34/a.jpg"));
    }

    #[test]
    fn allow_lists_trust_named_hosts_and_ranges() {
        let cfg = config::Fetch {
            allow_hosts: vec!["images.internal".into()],
            allow_cidrs: vec!["10.9.0.0/16".into(), "127.0.0.1".into()],
            ..lookalike_core::Config::load_from(None, Vec::new())
                .unwrap()
                .fetch
        };
        let g = Guard::from_config(&cfg).unwrap();
        assert!(g.ip_allowed("10.9.1.2".parse().unwrap()));
        assert!(g.ip_allowed("127.0.0.1".parse().unwrap()));
        assert!(!g.ip_allowed("127.0.0.2".parse().unwrap()));
        assert!(!g.ip_allowed("10.8.0.1".parse().unwrap()));
        assert!(g.host_trusted("images.internal"));
        assert!(g.host_trusted("IMAGES.internal."));
    }
}
