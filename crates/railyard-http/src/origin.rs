//! Where a request came from: the socket's peer address, or — only when that peer is one of
//! the configured trusted proxies — the client its `X-Forwarded-For` names. [`serve`] serves a
//! router with the peer address attached to every request (axum's `ConnectInfo`), which every
//! Railyard listener uses, so no handler has to believe a header for it.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;

/// The variable that lists the trusted proxies (see [`TrustedProxies`]).
pub const TRUSTED_PROXIES_ENV: &str = "RAILYARD_TRUSTED_PROXIES";

/// One address or CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Block {
    type Err = ();

    fn from_str(text: &str) -> Result<Block, ()> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address.parse::<IpAddr>().map_err(|_| ())?.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= bits).ok_or(())?,
            None => bits,
        };
        Ok(Block { network, prefix })
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR blocks, IPv4 or IPv6
/// (`10.0.0.0/8, 192.0.2.7, fd00::/8`). Empty (the default) believes no header: the origin is
/// always the socket's peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Block>);

/// A trusted-proxy list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "trusted proxies: {entry:?} is not an ip address or cidr block: list addresses and blocks \
     separated by commas, e.g. \"10.0.0.0/8, 192.0.2.7, fd00::/8\""
)]
pub struct TrustedProxiesError {
    /// The entry that does not parse.
    pub entry: String,
}

impl TrustedProxies {
    /// Trusts nobody.
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    /// Reads [`TRUSTED_PROXIES_ENV`]; unset or empty trusts nobody.
    pub fn from_env() -> Result<TrustedProxies, TrustedProxiesError> {
        std::env::var(TRUSTED_PROXIES_ENV)
            .map(|text| text.parse())
            .unwrap_or_else(|_| Ok(TrustedProxies::none()))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    fn from_str(text: &str) -> Result<TrustedProxies, TrustedProxiesError> {
        text.split([',', ' ', '\t', '\n'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry.parse().map_err(|()| TrustedProxiesError {
                    entry: entry.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocks: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&blocks.join(", "))
    }
}

/// Where a request came from, as recorded in logs and the rejection log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    client: Option<IpAddr>,
    shown: String,
}

impl Origin {
    /// The origin of a request from socket peer `peer`: the peer itself, unless it is a trusted
    /// proxy — then the nearest untrusted address in `X-Forwarded-For`, read from the right
    /// (each trusted proxy appends the address it received the request from). A hop that is
    /// not an address stops the walk at the proxy that wrote it. Without a peer (a router not
    /// served by [`serve`]) the origin is `unknown` and no header is believed.
    pub fn of(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Origin {
        let Some(peer) = peer else {
            return Origin::named("unknown");
        };
        let mut client = peer.ip().to_canonical();
        if trusted.contains(client) {
            let hops: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .collect();
            for hop in hops.into_iter().rev() {
                let Some(ip) = hop_address(hop) else { break };
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
        }
        if client == peer.ip().to_canonical() {
            Origin {
                client: Some(client),
                shown: peer.to_string(),
            }
        } else {
            Origin {
                client: Some(client),
                shown: format!("{client} via {peer}"),
            }
        }
    }

    /// The origin of `request`, from its `ConnectInfo` (see [`Origin::of`]).
    pub fn of_request(request: &Request, trusted: &TrustedProxies) -> Origin {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        Origin::of(peer, request.headers(), trusted)
    }

    /// An origin that is not an address (`nats`, a test's name).
    pub fn named(name: impl Into<String>) -> Origin {
        Origin {
            client: None,
            shown: name.into(),
        }
    }

    /// The client's address, when the origin is one.
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// What per-origin limits count under: an IPv4 address, an IPv6 /64 (one subscriber's
    /// network, which hands out addresses freely), else the name.
    pub fn limit_key(&self) -> String {
        match self.client {
            Some(IpAddr::V4(ip)) => ip.to_string(),
            Some(IpAddr::V6(ip)) => {
                let network = Ipv6Addr::from(u128::from(ip) & (u128::MAX << 64));
                format!("{network}/64")
            }
            None => self.shown.clone(),
        }
    }

    /// As recorded: `ip:port` of the peer, `client via ip:port` through a trusted proxy.
    pub fn as_str(&self) -> &str {
        &self.shown
    }
}

impl From<&str> for Origin {
    fn from(name: &str) -> Origin {
        Origin::named(name)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// An `X-Forwarded-For` hop: an address, perhaps with a port (`192.0.2.7:4711`, `[2001:db8::1]:80`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Serves `router` on `listener` until `shutdown` completes, with every request's peer address
/// attached (`ConnectInfo<SocketAddr>`, read by [`Origin::of_request`]).
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(peer: &str, forwarded: &[&str], trusted: &str) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        let trusted: TrustedProxies = trusted.parse().unwrap();
        Origin::of(Some(peer.parse().unwrap()), &headers, &trusted).to_string()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let cases = [
            // (peer, X-Forwarded-For headers, trusted, origin)
            (
                "198.51.100.4:5000",
                &["203.0.113.9"][..],
                "",
                "198.51.100.4:5000",
            ),
            (
                "198.51.100.4:5000",
                &["203.0.113.9"],
                "10.0.0.0/8",
                "198.51.100.4:5000",
            ),
            (
                "10.1.2.3:5000",
                &["203.0.113.9"],
                "10.0.0.0/8",
                "203.0.113.9 via 10.1.2.3:5000",
            ),
            ("10.1.2.3:5000", &[], "10.0.0.0/8", "10.1.2.3:5000"),
            // The client cannot pick its origin by sending a header of its own: the rightmost
            // untrusted hop wins, and everything to its left is the client's claim.
            (
                "10.1.2.3:5000",
                &["1.1.1.1, 203.0.113.9"],
                "10.0.0.0/8",
                "203.0.113.9 via 10.1.2.3:5000",
            ),
            (
                "10.1.2.3:5000",
                &["1.1.1.1", "203.0.113.9, 10.9.9.9"],
                "10.0.0.0/8",
                "203.0.113.9 via 10.1.2.3:5000",
            ),
            // Every hop trusted: the leftmost one.
            (
                "10.1.2.3:5000",
                &["10.4.4.4, 10.9.9.9"],
                "10.0.0.0/8",
                "10.4.4.4 via 10.1.2.3:5000",
            ),
            // Garbage stops the walk at the proxy that wrote it.
            (
                "10.1.2.3:5000",
                &["203.0.113.9, unknown"],
                "10.0.0.0/8",
                "10.1.2.3:5000",
            ),
            (
                "10.1.2.3:5000",
                &["203.0.113.9:4711"],
                "10.1.2.3",
                "203.0.113.9 via 10.1.2.3:5000",
            ),
            (
                "[::1]:80",
                &["2001:db8::7"],
                "::1",
                "2001:db8::7 via [::1]:80",
            ),
            (
                "[::ffff:10.1.2.3]:80",
                &["203.0.113.9"],
                "10.0.0.0/8",
                "203.0.113.9 via [::ffff:10.1.2.3]:80",
            ),
            (
                "[2001:db8::1]:80",
                &["203.0.113.9"],
                "10.0.0.0/8",
                "[2001:db8::1]:80",
            ),
        ];
        for (peer, forwarded, trusted, expected) in cases {
            assert_eq!(
                origin(peer, forwarded, trusted),
                expected,
                "peer {peer}, x-forwarded-for {forwarded:?}, trusted {trusted:?}"
            );
        }
    }

    #[test]
    fn no_peer_believes_no_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        let all: TrustedProxies = "0.0.0.0/0, ::/0".parse().unwrap();
        assert_eq!(Origin::of(None, &headers, &all).as_str(), "unknown");
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_blocks_or_say_what_is_wrong() {
        let trusted: TrustedProxies = " 10.0.0.0/8,192.0.2.7 fd00::/8 ".parse().unwrap();
        assert_eq!(trusted.to_string(), "10.0.0.0/8, 192.0.2.7/32, fd00::/8");
        assert!(trusted.contains("10.200.0.1".parse().unwrap()));
        assert!(trusted.contains("192.0.2.7".parse().unwrap()));
        assert!(!trusted.contains("192.0.2.8".parse().unwrap()));
        assert!(trusted.contains("fd12::1".parse().unwrap()));
        assert!(trusted.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/", "::/129"] {
            let error = bad.parse::<TrustedProxies>().unwrap_err();
            assert_eq!(error.entry, bad);
            assert!(error.to_string().contains("e.g."), "{error}");
        }
    }

    #[test]
    fn limits_count_ipv6_by_network() {
        let headers = HeaderMap::new();
        let none = TrustedProxies::none();
        let key = |peer: &str| Origin::of(Some(peer.parse().unwrap()), &headers, &none).limit_key();
        assert_eq!(key("198.51.100.4:5000"), "198.51.100.4");
        assert_eq!(key("[2001:db8:1:2:aaaa::1]:80"), "2001:db8:1:2::/64");
        assert_eq!(key("[2001:db8:1:2:bbbb::9]:81"), "2001:db8:1:2::/64");
        assert_eq!(Origin::named("nats").limit_key(), "nats");
    }
}
