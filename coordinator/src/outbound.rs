//! The outbound policy: which participant addresses dtx may call
//! (`--allow-participants`), the DNS resolver that enforces it when a call
//! connects, and the redaction of URLs for errors and logs.
//!
//! The policy is checked twice. At registration, on a branch URL's host: an
//! IP literal is decided there; a host name is refused only when no entry of
//! the list could ever allow it (the list names hosts and none matches, and
//! it has no range the name might resolve into). When a call connects, on
//! every address the host name resolves to ([`PolicyResolver`]): a denied
//! address is dropped, and a call left with none fails naming the policy.
//! So DNS rebinding (a name that resolved somewhere harmless at registration
//! and into the metadata service later) cannot go around the first check.
//!
//! Without a list, any address may be called except link-local ones
//! (169.254.0.0/16, fe80::/10), the cloud metadata services and the
//! unspecified addresses. With a list, only what it lists: an address in
//! one of its ranges, or any address of a host name it lists (a listed name
//! is trusted to resolve where its owner points it). Whatever the list, an
//! unspecified address (0.0.0.0, `::`, which reach the coordinator's own
//! host) is never called, and a metadata address only when the list names
//! it as a single address: a broad range such as `0.0.0.0/0` never opens the
//! metadata service by accident. IPv4-mapped IPv6 addresses
//! (`::ffff:169.254.169.254`) are judged as the IPv4 address they carry.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use url::Host;

/// Where the policy comes from, for the sentences that name it.
const POLICY: &str = "the outbound policy (--allow-participants)";

/// Cloud metadata services: AWS, GCP, Azure, Oracle and others on
/// 169.254.169.254, AWS's IPv6 endpoint, Alibaba Cloud's.
const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// One entry of `--allow-participants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// Exactly this host name (lower case, without a trailing dot).
    Name(String),
    /// Every name under a domain, from `*.example.com`; held as
    /// `.example.com`. `example.com` itself is not matched.
    Suffix(String),
    /// Every address in this range; a bare address is a range of one.
    Range(IpNet),
}

impl std::str::FromStr for AllowEntry {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let entry = raw.trim();
        if entry.is_empty() {
            return Err(
                "an entry is empty: list host names (`api.internal`, or `*.internal` \
                 for every name under it) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`), \
                 separated by commas"
                    .into(),
            );
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(AllowEntry::Range(IpNet::from(ip)));
        }
        if entry.contains("://") {
            return Err(format!(
                "`{entry}` is a URL: list only its host (`api.internal`) or a range \
                 (`10.0.0.0/8`)"
            ));
        }
        if entry.contains('/') {
            let net: IpNet = entry.parse().map_err(|_| {
                format!(
                    "`{entry}` is not a CIDR range: write an address, `/` and a prefix \
                     length, like `10.0.0.0/8` or `fd00::/8`"
                )
            })?;
            // `10.0.0.1/8` is most likely a typo for a single address or for
            // `10.0.0.0/8`; guessing either would allow what nobody meant.
            if net.trunc() != net {
                return Err(format!(
                    "`{entry}` has address bits set after its prefix: write `{}` for the \
                     range or the bare address for one host",
                    net.trunc()
                ));
            }
            return Ok(AllowEntry::Range(net));
        }
        let (wildcard, name) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let name = normalize_name(name);
        check_host_name(&name).map_err(|why| format!("`{entry}` {why}"))?;
        Ok(if wildcard {
            AllowEntry::Suffix(format!(".{name}"))
        } else {
            AllowEntry::Name(name)
        })
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Name(name) => f.write_str(name),
            AllowEntry::Suffix(suffix) => write!(f, "*{suffix}"),
            AllowEntry::Range(net) => write!(f, "{net}"),
        }
    }
}

/// Lower case, without the trailing dot of a fully qualified name: the form
/// both the list and the URLs are compared in.
fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A DNS name: dot-separated labels of 1 to 63 letters, digits, `-` or `_`,
/// 253 characters at most, whose last label is not all digits (URL parsing
/// reads such a host as an IPv4 address, so the entry would never match).
fn check_host_name(name: &str) -> Result<(), &'static str> {
    const RULE: &str = "is neither a CIDR range (`10.0.0.0/8`) nor a host name (`api.internal`, \
                        or `*.internal` for every name under it)";
    let labels_ok = name.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    });
    if name.is_empty() || name.len() > 253 || !labels_ok {
        return Err(RULE);
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(
            "looks like an incomplete IP address: write the address in full \
                    (`10.0.0.1`) or a range (`10.0.0.0/8`)",
        );
    }
    Ok(())
}

/// Which destinations dtx may call. The default (no list) is any address
/// but link-local, metadata and unspecified ones.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow: Option<AllowList>,
}

/// The entries of `--allow-participants`, by kind.
#[derive(Debug, Clone, Default)]
struct AllowList {
    names: Vec<String>,
    suffixes: Vec<String>,
    ranges: Vec<IpNet>,
}

impl AllowList {
    fn lists_name(&self, name: &str) -> bool {
        let name = normalize_name(name);
        self.names.contains(&name) || self.suffixes.iter().any(|s| name.ends_with(s.as_str()))
    }

    fn in_range(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|net| net.contains(&ip))
    }

    /// Whether `ip` is listed as a single address (`/32`, `/128` or bare).
    fn lists_exactly(&self, ip: IpAddr) -> bool {
        self.ranges
            .iter()
            .any(|net| net.prefix_len() == net.max_prefix_len() && net.addr() == ip)
    }
}

impl OutboundPolicy {
    /// The policy of `--allow-participants`: only what `entries` list, or
    /// the default when they are none.
    pub fn new(entries: &[AllowEntry]) -> Self {
        if entries.is_empty() {
            return OutboundPolicy::default();
        }
        let mut list = AllowList::default();
        for entry in entries {
            match entry {
                AllowEntry::Name(name) => list.names.push(name.clone()),
                AllowEntry::Suffix(suffix) => list.suffixes.push(suffix.clone()),
                AllowEntry::Range(net) => list.ranges.push(*net),
            }
        }
        OutboundPolicy { allow: Some(list) }
    }

    /// Whether a branch URL (already known to be absolute http or https)
    /// may be registered; the error says why not, as the end of a sentence
    /// that starts with the URL.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let verdict = match url.host() {
            Some(Host::Ipv4(ip)) => self.check_addr(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_addr(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => self.check_name(name),
            None => Err("it has no host".into()),
        };
        verdict.map_err(|why| format!("is refused by {POLICY}: {why}"))
    }

    /// Whether an address given as such (an IP literal in a URL) may be
    /// called; the error is the reason.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        if let Some(why) = self.never_called(ip) {
            return Err(why);
        }
        match &self.allow {
            None if is_link_local(ip) => Err(format!(
                "{ip} is link-local (169.254.0.0/16, fe80::/10), which dtx does not call \
                 unless --allow-participants lists it"
            )),
            None => Ok(()),
            Some(list) if list.in_range(ip) => Ok(()),
            Some(_) => Err(format!(
                "{ip} is in none of the ranges --allow-participants lists"
            )),
        }
    }

    /// Whether a host name may be registered. Only a list that names hosts
    /// and has no range refuses one: with a range, where the name resolves
    /// decides when the call connects.
    fn check_name(&self, name: &str) -> Result<(), String> {
        match &self.allow {
            Some(list) if list.ranges.is_empty() && !list.lists_name(name) => Err(format!(
                "host `{name}` matches none of the names --allow-participants lists"
            )),
            _ => Ok(()),
        }
    }

    /// Whether `ip`, which host name `name` resolved to, may be called.
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        match &self.allow {
            Some(list) if list.lists_name(name) => self.never_called(ip).map_or(Ok(()), Err),
            _ => self.check_addr(ip),
        }
    }

    /// The addresses no list opens: unspecified ones always, metadata ones
    /// unless the list names them one by one.
    fn never_called(&self, ip: IpAddr) -> Option<String> {
        if ip.is_unspecified() {
            return Some(format!(
                "{ip} is the unspecified address, which reaches the coordinator's own host"
            ));
        }
        let listed_exactly = self.allow.as_ref().is_some_and(|l| l.lists_exactly(ip));
        (METADATA.contains(&ip) && !listed_exactly).then(|| {
            format!(
                "{ip} is a cloud metadata service, which dtx calls only when \
                 --allow-participants lists that very address"
            )
        })
    }
}

/// For the start-up log: what the policy lets dtx call.
impl fmt::Display for OutboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(list) = &self.allow else {
            return f
                .write_str("any address except link-local, cloud metadata and unspecified ones");
        };
        let names = list.names.iter().map(|n| n.to_string());
        let suffixes = list.suffixes.iter().map(|s| format!("*{s}"));
        let ranges = list.ranges.iter().map(|r| r.to_string());
        let all: Vec<String> = names.chain(suffixes).chain(ranges).collect();
        write!(f, "only {}", all.join(", "))
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// A call the policy stopped: none of the addresses its host resolved to
/// may be called. The transport finds it in the error's causes to say so.
#[derive(Debug)]
pub struct OutboundDenied(pub String);

impl fmt::Display for OutboundDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutboundDenied {}

/// The HTTP client's DNS resolver: resolves with tokio and keeps only the
/// addresses the policy allows. reqwest does not ask it for IP literals;
/// the transport checks those itself.
pub struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
}

impl PolicyResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        PolicyResolver { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| match policy.check_resolved(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            match refusal {
                Some(why) if allowed.is_empty() => {
                    let denied = OutboundDenied(format!(
                        "refused by {POLICY}: `{host}` resolves only to addresses it denies; {why}"
                    ));
                    Err(Box::new(denied) as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Stands for what a URL's credentials, query and fragment held.
const HIDDEN: &str = "<hidden>";

/// `raw` with its credentials, query and fragment replaced by `<hidden>`,
/// for errors, logs and answers: `https://<hidden>@host/path?<hidden>`.
/// The rest is kept as it was written (not normalized), so that a person
/// recognizes it; relative references (a `Location` header) and text that
/// is not a URL at all are redacted too.
pub fn redacted_url(raw: &str) -> String {
    let shown = redacted_text(raw);
    // URL parsing is lenient (`http:user:pw@host` has credentials): where
    // it finds some that the text-level pass did not hide, show the parsed
    // URL, rebuilt without them.
    match url::Url::parse(raw) {
        Ok(url)
            if (!url.username().is_empty() || url.password().is_some())
                && !shown.contains(&format!("{HIDDEN}@")) =>
        {
            rebuilt_without_secrets(&url)
        }
        _ => shown,
    }
}

/// Everything from the first `?` or `#` is hidden, and so is everything
/// before the last `@` of the authority (which ends at `/` or `\`, as URL
/// parsing has it).
fn redacted_text(raw: &str) -> String {
    let (head, mark) = match raw.find(['?', '#']) {
        Some(at) => (&raw[..at], Some(&raw[at..at + 1])),
        None => (raw, None),
    };
    let authority_start = head
        .find("//")
        .filter(|&at| !head[..at].contains('/'))
        .map(|at| at + 2);
    let mut shown = match authority_start {
        Some(start) => {
            let end = head[start..]
                .find(['/', '\\'])
                .map_or(head.len(), |end| start + end);
            match head[start..end].rfind('@') {
                Some(at) => format!("{}{HIDDEN}{}", &head[..start], &head[start + at..]),
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(mark) = mark {
        shown.push_str(mark);
        shown.push_str(HIDDEN);
    }
    shown
}

/// `url` as scheme, host, port and path only, with markers where its
/// credentials, query and fragment were.
fn rebuilt_without_secrets(url: &url::Url) -> String {
    let mut shown = format!("{}://{HIDDEN}@", url.scheme());
    shown.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push('?');
        shown.push_str(HIDDEN);
    }
    if url.fragment().is_some() {
        shown.push('#');
        shown.push_str(HIDDEN);
    }
    shown
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
