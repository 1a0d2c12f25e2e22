//! Pieces shared by the echo benchmark's two programs: `loadgen`, a closed-loop load
//! generator, and `echo-server`, a single-threaded echo server in plain Rust (the floor the
//! Python servers are measured against). Both are single-threaded mio (epoll) loops.

pub mod tls;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Where to connect, or where to listen.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// A UDP address.
    Udp(SocketAddr),
}

impl Endpoint {
    /// The transport's name, as the command line spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Unix(_) => "unix",
            Endpoint::Udp(_) => "udp",
        }
    }

    /// The address or path, for messages and reports.
    pub fn target(&self) -> String {
        match self {
            Endpoint::Tcp(a) | Endpoint::Udp(a) => a.to_string(),
            Endpoint::Unix(p) => p.display().to_string(),
        }
    }

    /// The one `--tcp`, `--unix` or `--udp` among the parsed flags.
    pub fn from_flags(flags: &Flags) -> Result<Endpoint, String> {
        let given: Vec<&str> = ["tcp", "unix", "udp"]
            .into_iter()
            .filter(|k| flags.has(k))
            .collect();
        match given.as_slice() {
            ["tcp"] => Ok(Endpoint::Tcp(resolve(flags.str("tcp")?)?)),
            ["udp"] => Ok(Endpoint::Udp(resolve(flags.str("udp")?)?)),
            ["unix"] => Ok(Endpoint::Unix(PathBuf::from(flags.str("unix")?))),
            [] => Err("one of --tcp HOST:PORT, --unix PATH or --udp HOST:PORT is needed".into()),
            _ => Err("give only one of --tcp, --unix and --udp".into()),
        }
    }
}

/// `HOST:PORT` to its first socket address.
pub fn resolve(spec: &str) -> Result<SocketAddr, String> {
    spec.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {spec:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{spec:?} resolves to no address"))
}

/// A connected byte stream (TCP or Unix) that the poll can watch.
pub trait Duplex: Read + Write + mio::event::Source {}

impl<T: Read + Write + mio::event::Source> Duplex for T {}

/// Command-line flags: `--name value` or `--name=value`, each at most once.
#[derive(Debug, Default)]
pub struct Flags {
    values: HashMap<String, String>,
}

impl Flags {
    /// Parses `args` (without the program name). Every flag takes a value; names outside
    /// `known` are an error.
    pub fn parse(args: impl IntoIterator<Item = String>, known: &[&str]) -> Result<Flags, String> {
        let mut values = HashMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = args
                        .next()
                        .ok_or_else(|| format!("--{body} needs a value"))?;
                    (body.to_string(), v)
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} given twice"));
            }
        }
        Ok(Flags { values })
    }

    /// Whether `--name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The value of a required `--name`.
    pub fn str(&self, name: &str) -> Result<&str, String> {
        self.values
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// `--name` parsed as `T`, or `default` when absent.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not a valid number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_take_both_spellings() {
        let f = Flags::parse(args(&["--conns", "4", "--size=16"]), &["conns", "size"]).unwrap();
        assert_eq!(f.num("conns", 0usize).unwrap(), 4);
        assert_eq!(f.num("size", 0usize).unwrap(), 16);
        assert_eq!(f.num("other", 7usize).unwrap(), 7);
    }

    #[test]
    fn flags_reject_unknown_repeated_and_dangling() {
        assert!(Flags::parse(args(&["--nope", "1"]), &["conns"]).is_err());
        assert!(Flags::parse(args(&["--conns", "1", "--conns", "2"]), &["conns"]).is_err());
        assert!(Flags::parse(args(&["--conns"]), &["conns"]).is_err());
        assert!(Flags::parse(args(&["conns"]), &["conns"]).is_err());
    }

    #[test]
    fn exactly_one_endpoint() {
        let known = ["tcp", "unix", "udp"];
        let f = Flags::parse(args(&["--unix", "/tmp/x"]), &known).unwrap();
        assert_eq!(Endpoint::from_flags(&f).unwrap().kind(), "unix");
        let f = Flags::parse(args(&["--tcp", "127.0.0.1:1"]), &known).unwrap();
        assert_eq!(Endpoint::from_flags(&f).unwrap().kind(), "tcp");
        let f = Flags::parse(
            args(&["--tcp", "127.0.0.1:1", "--udp", "127.0.0.1:1"]),
            &known,
        )
        .unwrap();
        assert!(Endpoint::from_flags(&f).is_err());
        assert!(Endpoint::from_flags(&Flags::default()).is_err());
    }
}
