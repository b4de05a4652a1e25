//! `[HOST:]PORT` as typed on the command line.

use std::fmt;
use std::str::FromStr;

/// A host (optional for listening) and a port, parsed from `PORT`, `HOST:PORT`, `[V6]:PORT`.
///
/// ```
/// use wirechat::transport::HostPort;
/// let any: HostPort = "8899".parse().unwrap();
/// assert_eq!((any.host, any.port), (None, 8899));
/// let v6: HostPort = "[::1]:80".parse().unwrap();
/// assert_eq!(v6.host.as_deref(), Some("::1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host name or address literal, without brackets; `None` means all interfaces.
    pub host: Option<String>,
    /// The port; 0 lets the kernel choose when binding.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after the IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("{s:?}: expected [ADDRESS]:PORT"))?;
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{s:?}: {v6:?} is not an IPv6 address"));
            }
            (Some(v6.to_string()), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!(
                        "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:8080"
                    ));
                }
                Some(("", p)) => (None, p),
                Some((h, p)) => (Some(h.to_string()), p),
                None => (None, s),
            }
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: {port:?} is not a port number (0-65535)"))?;
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None => write!(f, "{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(h: Option<&str>, port: u16) -> HostPort {
        HostPort {
            host: h.map(str::to_string),
            port,
        }
    }

    #[test]
    fn forms() {
        assert_eq!("8080".parse(), Ok(hp(None, 8080)));
        assert_eq!(":8080".parse(), Ok(hp(None, 8080)));
        assert_eq!("127.0.0.1:0".parse(), Ok(hp(Some("127.0.0.1"), 0)));
        assert_eq!("[::1]:80".parse(), Ok(hp(Some("::1"), 80)));
        assert_eq!("localhost:1".parse(), Ok(hp(Some("localhost"), 1)));
        assert!(
            "::1:80"
                .parse::<HostPort>()
                .unwrap_err()
                .contains("brackets")
        );
        assert!("host:99999".parse::<HostPort>().is_err());
        assert!("[::1".parse::<HostPort>().is_err());
        assert!("[zz]:1".parse::<HostPort>().is_err());
        assert_eq!(hp(Some("::1"), 5).to_string(), "[::1]:5");
    }
}
