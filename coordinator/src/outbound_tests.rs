//! Tests of the outbound policy: parsing `--allow-participants`, the default
//! policy, IPv4-mapped IPv6 forms, names and suffixes, the resolver and the
//! redaction of URLs.

use super::*;

fn entries(list: &[&str]) -> Vec<AllowEntry> {
    list.iter()
        .map(|e| e.parse().unwrap_or_else(|why| panic!("{e}: {why}")))
        .collect()
}

fn policy(list: &[&str]) -> OutboundPolicy {
    OutboundPolicy::new(&entries(list))
}

fn url_verdict(policy: &OutboundPolicy, raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
    policy.check_url(&url)
}

#[test]
fn entries_parse_into_names_suffixes_and_ranges() {
    let cases = [
        ("api.internal", AllowEntry::Name("api.internal".into())),
        ("API.Internal.", AllowEntry::Name("api.internal".into())),
        ("localhost", AllowEntry::Name("localhost".into())),
        (
            "*.svc.cluster.local",
            AllowEntry::Suffix(".svc.cluster.local".into()),
        ),
        (
            " 10.0.0.0/8 ",
            AllowEntry::Range("10.0.0.0/8".parse().unwrap()),
        ),
        ("fd00::/8", AllowEntry::Range("fd00::/8".parse().unwrap())),
        (
            "127.0.0.2",
            AllowEntry::Range("127.0.0.2/32".parse().unwrap()),
        ),
        ("::1", AllowEntry::Range("::1/128".parse().unwrap())),
    ];
    for (raw, want) in cases {
        assert_eq!(raw.parse::<AllowEntry>(), Ok(want), "{raw}");
    }
    assert_eq!(
        "*.svc.cluster.local"
            .parse::<AllowEntry>()
            .unwrap()
            .to_string(),
        "*.svc.cluster.local"
    );
}

#[test]
fn bad_entries_are_refused_with_a_reason() {
    let cases = [
        ("", "empty"),
        ("  ", "empty"),
        ("10.0.0.0/33", "not a CIDR range"),
        ("10.0.0.1/8", "write `10.0.0.0/8`"),
        ("fd00::1/8", "write `fd00::/8`"),
        ("http://api.internal", "is a URL: list only its host"),
        ("api/internal", "not a CIDR range"),
        ("api internal", "is neither a CIDR range"),
        ("api.internal:8080", "neither"),
        ("*", "neither"),
        ("*api.internal", "neither"),
        ("a..b", "neither"),
        ("10.0.1", "incomplete IP address"),
        ("[::1]", "neither"),
    ];
    for (raw, needle) in cases {
        let err = raw.parse::<AllowEntry>().expect_err(raw);
        assert!(err.contains(needle), "{raw:?}: {err}");
    }
}

#[test]
fn a_bad_entry_is_a_start_up_error_of_the_flag() {
    use crate::config::Cli;
    use clap::Parser;
    let err = Cli::try_parse_from([
        "dtx",
        "serve",
        "--allow-participants",
        "10.0.0.0/8,10.1.2.3/8",
    ])
    .expect_err("a range with host bits is refused");
    let shown = err.to_string();
    assert!(
        shown.contains("--allow-participants") && shown.contains("write `10.0.0.0/8`"),
        "{shown}"
    );
}

#[test]
fn the_flag_is_comma_separated_and_repeatable() {
    use crate::config::{Cli, Command};
    use clap::Parser;
    let cli = Cli::parse_from([
        "dtx",
        "serve",
        "--allow-participants",
        "10.0.0.0/8,api.internal",
        "--allow-participants",
        "*.svc",
    ]);
    let Command::Serve(settings) = cli.command else {
        panic!("serve expected")
    };
    assert_eq!(
        settings.allow_participants,
        entries(&["10.0.0.0/8", "api.internal", "*.svc"])
    );
    assert_eq!(
        OutboundPolicy::new(&settings.allow_participants).to_string(),
        "only api.internal, *.svc, 10.0.0.0/8"
    );
}

#[test]
fn by_default_everything_but_link_local_metadata_and_unspecified_is_allowed() {
    let open = OutboundPolicy::default();
    for ok in [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "8.8.8.8",
        "100.100.100.199",
        "::1",
        "fd00:ec2::253",
        "2001:db8::1",
    ] {
        let ip: IpAddr = ok.parse().unwrap();
        assert_eq!(open.check_addr(ip), Ok(()), "{ok}");
    }
    for (denied, why) in [
        ("169.254.169.254", "metadata"),
        ("169.254.0.1", "link-local"),
        ("169.254.255.255", "link-local"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
    ] {
        let ip: IpAddr = denied.parse().unwrap();
        let err = open.check_addr(ip).expect_err(denied);
        assert!(err.contains(why), "{denied}: {err}");
    }
    assert_eq!(url_verdict(&open, "https://any.name.example/x"), Ok(()));
}

#[test]
fn ipv4_mapped_ipv6_is_judged_as_the_ipv4_address() {
    let open = OutboundPolicy::default();
    for mapped in [
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::ffff:169.254.1.1]/",
        "http://[::ffff:100.100.100.200]/",
        "http://[::ffff:0.0.0.0]/",
    ] {
        let err = url_verdict(&open, mapped).expect_err(mapped);
        assert!(err.contains("outbound policy"), "{mapped}: {err}");
    }
    assert_eq!(url_verdict(&open, "http://[::ffff:10.0.0.1]/"), Ok(()));
    let only = policy(&["127.0.0.2/32"]);
    assert_eq!(url_verdict(&only, "http://[::ffff:127.0.0.2]:9/"), Ok(()));
    assert!(url_verdict(&only, "http://[::ffff:127.0.0.1]:9/").is_err());
}

#[test]
fn odd_spellings_of_an_address_are_judged_as_the_address() {
    // URL parsing reads these as IPv4 addresses (WHATWG), as reqwest does.
    let open = OutboundPolicy::default();
    for odd in [
        "http://0xa9fea9fe/",
        "http://2852039166/",
        "http://169.254.43518/",
    ] {
        assert!(url_verdict(&open, odd).is_err(), "{odd}");
    }
}

#[test]
fn a_list_allows_only_what_it_lists() {
    let only = policy(&["127.0.0.2/32", "10.0.0.0/8", "fd00::/8"]);
    for ok in [
        "http://127.0.0.2:80/",
        "http://10.200.0.1/",
        "http://[fd12::1]/",
    ] {
        assert_eq!(url_verdict(&only, ok), Ok(()), "{ok}");
    }
    for denied in [
        "http://127.0.0.1/",
        "http://127.0.0.3/",
        "http://[::1]/",
        "http://11.0.0.1/",
    ] {
        let err = url_verdict(&only, denied).expect_err(denied);
        assert!(err.contains("none of the ranges"), "{denied}: {err}");
    }
}

#[test]
fn a_listed_range_opens_link_local_but_metadata_only_one_by_one() {
    let broad = policy(&["0.0.0.0/0", "::/0"]);
    assert_eq!(url_verdict(&broad, "http://169.254.1.1/"), Ok(()));
    assert_eq!(url_verdict(&broad, "http://[fe80::1]/"), Ok(()));
    for metadata in [
        "http://169.254.169.254/",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
    ] {
        let err = url_verdict(&broad, metadata).expect_err(metadata);
        assert!(err.contains("metadata"), "{metadata}: {err}");
    }
    assert!(url_verdict(&broad, "http://0.0.0.0/").is_err());
    let named = policy(&["169.254.169.254"]);
    assert_eq!(url_verdict(&named, "http://169.254.169.254/"), Ok(()));
    assert!(url_verdict(&policy(&["0.0.0.0/32"]), "http://0.0.0.0/").is_err());
}

#[test]
fn names_are_judged_at_registration_only_when_no_range_could_allow_them() {
    let names = policy(&["api.internal", "*.svc.local"]);
    for ok in [
        "http://api.internal/",
        "http://API.internal./x",
        "http://a.svc.local/",
        "http://b.a.svc.local:8080/",
    ] {
        assert_eq!(url_verdict(&names, ok), Ok(()), "{ok}");
    }
    for denied in [
        "http://svc.local/",
        "http://api.internal.evil/",
        "http://evilsvc.local/",
        "http://localhost/",
    ] {
        let err = url_verdict(&names, denied).expect_err(denied);
        assert!(err.contains("none of the names"), "{denied}: {err}");
    }
    // With a range, any name may resolve into it: the connect-time check
    // decides.
    let mixed = policy(&["api.internal", "10.0.0.0/8"]);
    assert_eq!(url_verdict(&mixed, "http://anything.example/"), Ok(()));
}

#[test]
fn at_connect_time_a_listed_name_may_go_anywhere_but_metadata() {
    let list = policy(&["127.0.0.2/32", "api.internal"]);
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(list.check_resolved("api.internal", loopback), Ok(()));
    assert!(list.check_resolved("localhost", loopback).is_err());
    assert_eq!(
        list.check_resolved("localhost", "127.0.0.2".parse().unwrap()),
        Ok(())
    );
    assert!(
        list.check_resolved("api.internal", "169.254.169.254".parse().unwrap())
            .is_err()
    );
    assert!(
        list.check_resolved("api.internal", "::ffff:0.0.0.0".parse().unwrap())
            .is_err()
    );
    let open = OutboundPolicy::default();
    assert!(
        open.check_resolved("rebound.example", "169.254.169.254".parse().unwrap())
            .is_err()
    );
    assert_eq!(open.check_resolved("localhost", loopback), Ok(()));
}

#[tokio::test]
async fn the_resolver_drops_denied_addresses_and_names_the_policy_when_none_is_left() {
    use reqwest::dns::Resolve;
    let denying = PolicyResolver::new(Arc::new(policy(&["127.0.0.2/32"])));
    let name = "localhost".parse().expect("a name");
    let err = match denying.resolve(name).await {
        Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(e) => e,
    };
    let denied = err
        .downcast_ref::<OutboundDenied>()
        .expect("an OutboundDenied");
    assert!(
        denied.0.contains("outbound policy") && denied.0.contains("`localhost`"),
        "{denied}"
    );

    let allowing = PolicyResolver::new(Arc::new(policy(&["127.0.0.0/8", "::1/128"])));
    let addrs: Vec<SocketAddr> = allowing
        .resolve("localhost".parse().expect("a name"))
        .await
        .expect("localhost resolves")
        .collect();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
}

#[test]
fn redaction_hides_credentials_query_and_fragment() {
    let cases = [
        (
            "http://user:pw@127.0.0.1:1/x?token=abc",
            "http://<hidden>@127.0.0.1:1/x?<hidden>",
        ),
        ("https://user@host/p", "https://<hidden>@host/p"),
        ("https://:pw@host/p", "https://<hidden>@host/p"),
        ("https://host/p#frag", "https://host/p#<hidden>"),
        ("https://host:8443/a/b", "https://host:8443/a/b"),
        ("http://[::1]:8080/?a=1", "http://[::1]:8080/?<hidden>"),
        // A Location header may be relative, or not a URL at all.
        ("/next?code=secret", "/next?<hidden>"),
        ("//u:p@elsewhere/x?y", "//<hidden>@elsewhere/x?<hidden>"),
        ("ht!tp://u:p@h@x/y?z", "ht!tp://<hidden>@x/y?<hidden>"),
        ("not a url", "not a url"),
        // Kept as written, not normalized: a person recognizes it.
        ("ftp://h/\nü?x", "ftp://h/\nü?<hidden>"),
        ("HTTP://Host/%7e", "HTTP://Host/%7e"),
        // `@` in the password: the authority ends at its last `@`.
        ("http://u:p@ss@host/x", "http://<hidden>@host/x"),
        ("http://u:pw@host\\x", "http://<hidden>@host\\x"),
        ("http://host/a@b", "http://host/a@b"),
        // Credentials that only URL parsing finds.
        ("http:u:pw@host/x?q", "http://<hidden>@host/x?<hidden>"),
    ];
    for (raw, want) in cases {
        assert_eq!(redacted_url(raw), want, "{raw}");
    }
}

mod through_the_transport {
    //! Calls through [`HttpTransport`] to a real server on 127.0.0.1:0
    //! that counts what reaches it.

    use super::*;
    use crate::transport::{CallOutcome, CallRequest, HttpTransport, Transport};
    use dtx_protocol::{Mode, Op, Reply};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let router = axum::Router::new().fallback(axum::routing::post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "{}" }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        (addr, calls)
    }

    async fn call(policy: &[&str], url: &str) -> CallOutcome {
        let transport =
            HttpTransport::with_policy(None, Arc::new(super::policy(policy))).expect("a client");
        let payload = serde_json::json!({});
        let headers = BTreeMap::new();
        transport
            .call(CallRequest {
                url,
                gid: "g1",
                branch_id: "b1",
                op: Op::Action,
                mode: Mode::Saga,
                payload: &payload,
                headers: &headers,
                timeout: Duration::from_secs(5),
            })
            .await
    }

    #[tokio::test]
    async fn an_ip_literal_the_policy_denies_is_never_sent() {
        let (addr, calls) = counting_server().await;
        let url = format!("http://{addr}/act");
        let outcome = call(&["127.0.0.2/32"], &url).await;
        assert_eq!(outcome.reply, Reply::Unknown);
        let error = outcome.error.unwrap_or_default();
        assert!(error.contains("outbound policy"), "{error}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let mapped = format!("http://[::ffff:127.0.0.1]:{}/act", addr.port());
        assert_eq!(call(&["::1/128"], &mapped).await.reply, Reply::Unknown);
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        assert_eq!(call(&["127.0.0.1/32"], &url).await.reply, Reply::Success);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_denied_addresses_is_never_called() {
        let (addr, calls) = counting_server().await;
        let url = format!("http://localhost:{}/act", addr.port());
        let outcome = call(&["127.0.0.2/32"], &url).await;
        assert_eq!(outcome.reply, Reply::Unknown);
        let error = outcome.error.unwrap_or_default();
        assert!(
            error.starts_with("refused by the outbound policy") && error.contains("`localhost`"),
            "{error}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        assert_eq!(call(&["localhost"], &url).await.reply, Reply::Success);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_error_names_neither_credentials_nor_query() {
        let outcome = call(&[], "http://user:pw@127.0.0.1:1/x?token=abc").await;
        assert_eq!(outcome.reply, Reply::Unknown);
        let error = outcome.error.unwrap_or_default();
        assert!(error.starts_with("cannot connect: "), "{error}");
        assert!(!error.contains("pw") && !error.contains("abc"), "{error}");
    }
}
