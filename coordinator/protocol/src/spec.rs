//! What a client registers: the branches of a global transaction and its
//! options, with the structural checks that need no I/O (ids, headers,
//! dependencies, required operations). URL syntax is checked by the API
//! layer. The rules for branch ids and headers make sure that a branch that
//! registers can always be called: every id and header goes out on every call.

use crate::retry::RetryPolicy;
use crate::wire::{Mode, Op};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One participant of a global transaction, as registered.
///
/// Unknown fields are rejected: the URL map is flattened and its keys must be
/// operation names, so a misspelt field fails as an unknown operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchSpec {
    /// Unique within the transaction; sent to the participant as `dtx-branch`.
    pub id: String,
    /// URL of each operation the coordinator will call, keyed by operation.
    /// On the wire these are flat fields: `"action": "http://..."`.
    #[serde(flatten)]
    pub urls: BTreeMap<Op, String>,
    /// JSON body sent with every call on this branch.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Extra headers sent with every call on this branch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Saga only: ids of branches whose actions must succeed before this one
    /// starts. When no branch of a saga names any, the saga is sequential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
}

/// Per-transaction options; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TxOptions {
    /// Milliseconds from registration until phase one gives up: a saga still
    /// running compensates, an open TCC transaction is aborted.
    pub deadline_ms: u64,
    /// Milliseconds a single participant call may take before its answer is
    /// treated as unknown (and retried).
    pub request_timeout_ms: u64,
    /// Backoff between attempts of a call whose answer was unknown.
    pub retry: RetryPolicy,
    /// Milliseconds between two asks of a call answered "still working"
    /// (425): a steady interval, not the growing backoff of an unknown answer.
    pub poll_interval_ms: u64,
    /// Milliseconds a phase-two call may keep failing before the transaction
    /// is flagged for an operator. Retries go on after the flag.
    pub attention_after_ms: u64,
}

impl Default for TxOptions {
    fn default() -> Self {
        TxOptions {
            deadline_ms: 60_000,
            request_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            poll_interval_ms: 1_000,
            attention_after_ms: 600_000,
        }
    }
}

impl TxOptions {
    /// Checks the options make sense; returns a sentence for the caller if not.
    pub fn validate(&self) -> Result<(), String> {
        if self.deadline_ms == 0 || self.deadline_ms > 7 * 24 * 3_600_000 {
            return Err("options.deadline_ms must be between 1 ms and 7 days".into());
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > 600_000 {
            return Err("options.request_timeout_ms must be between 1 ms and 10 minutes".into());
        }
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 3_600_000 {
            return Err("options.poll_interval_ms must be between 1 ms and 1 hour".into());
        }
        if self.attention_after_ms == 0 {
            return Err("options.attention_after_ms must be above 0".into());
        }
        self.retry.validate().map_err(|e| format!("options.{e}"))
    }
}

/// Checks one branch: an id and headers that can be sent on every call
/// ([`check_branch_id`], [`check_branch_headers`]), and exactly the URLs its
/// mode calls.
pub fn validate_branch(mode: Mode, branch: &BranchSpec) -> Result<(), String> {
    check_branch_id(&branch.id)?;
    check_branch_headers(&branch.id, &branch.headers)?;
    for op in mode.required_ops() {
        if !branch.urls.contains_key(op) {
            return Err(format!(
                "branch `{}` has no `{}` URL, which {} requires",
                branch.id, op, mode
            ));
        }
    }
    if let Some(op) = branch
        .urls
        .keys()
        .find(|op| !mode.required_ops().contains(op))
    {
        return Err(format!(
            "branch `{}` has a `{}` URL, which {} does not use",
            branch.id, op, mode
        ));
    }
    if mode != Mode::Saga && branch.depends_on.is_some() {
        return Err(format!(
            "branch `{}`: `depends_on` is only for sagas",
            branch.id
        ));
    }
    Ok(())
}

/// Longest branch id, in characters (all ASCII, so also in bytes).
pub const BRANCH_ID_MAX: usize = 128;
/// Most headers one branch may register.
pub const BRANCH_HEADERS_MAX: usize = 32;
/// Longest header name, in characters.
pub const HEADER_NAME_MAX: usize = 128;
/// Longest header value, in characters.
pub const HEADER_VALUE_MAX: usize = 4096;
/// Most bytes of one branch's header names and values together. Servers
/// bound a request's header section (nginx by default: 8 KiB a line, 32 KiB
/// in all; others less); this leaves room for the coordinator's own headers
/// under the smallest common limits.
pub const BRANCH_HEADERS_BYTES_MAX: usize = 6144;

/// Header names a branch may not set, compared case-insensitively (and
/// every `dtx-*` and `proxy-*` name besides). The coordinator sets the body's
/// headers and the trace context itself; the connection-level ones belong to
/// the HTTP client, and a wrong one breaks the call (a `content-length` that
/// disagrees with the body truncates it; `host` sends it to another site).
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "traceparent",
];

/// Whether `c` may appear in a branch id (and in a gid): ASCII letters,
/// digits, `-`, `_`, `.` and `:`. Each is safe as it is in a header value and
/// in a URL path, so an id is sent and shown without any escaping.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// Checks a branch id: 1 to [`BRANCH_ID_MAX`] characters, each one
/// [`is_id_char`]. The id goes out as the `dtx-branch` header of every call,
/// so an id outside this set would register and then never be called.
pub fn check_branch_id(id: &str) -> Result<(), String> {
    const RULE: &str =
        "a branch id is 1 to 128 characters of ASCII letters, digits, `-`, `_`, `.` or `:`";
    if id.is_empty() {
        return Err(format!("every branch needs a non-empty `id`: {RULE}"));
    }
    if let Some((at, c)) = id.chars().enumerate().find(|(_, c)| !is_id_char(*c)) {
        return Err(format!(
            "branch id `{}` has {} at character {}: {RULE}",
            excerpt(id),
            describe_char(c),
            at + 1
        ));
    }
    if id.len() > BRANCH_ID_MAX {
        return Err(format!(
            "branch id `{}` is {} characters long: {RULE}",
            excerpt(id),
            id.len()
        ));
    }
    Ok(())
}

/// Checks the headers of branch `branch_id`: at most [`BRANCH_HEADERS_MAX`]
/// of them, [`BRANCH_HEADERS_BYTES_MAX`] bytes in all; each name an RFC 9110
/// token of at most [`HEADER_NAME_MAX`] characters, used once whatever its
/// case, and not one the coordinator or the HTTP client sets; each value at
/// most [`HEADER_VALUE_MAX`] characters of visible ASCII, spaces and tabs,
/// without leading or trailing whitespace (which receivers strip). Errors
/// never repeat a value: it may be a credential.
pub fn check_branch_headers(
    branch_id: &str,
    headers: &BTreeMap<String, String>,
) -> Result<(), String> {
    let branch = excerpt(branch_id);
    if headers.len() > BRANCH_HEADERS_MAX {
        return Err(format!(
            "branch `{branch}` has {} headers; at most {BRANCH_HEADERS_MAX} are allowed",
            headers.len()
        ));
    }
    let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > BRANCH_HEADERS_BYTES_MAX {
        return Err(format!(
            "branch `{branch}` has {total} bytes of headers; at most {BRANCH_HEADERS_BYTES_MAX} are allowed"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        check_header_name(&branch, name)?;
        let lower = name.to_ascii_lowercase();
        if !seen.insert(lower.clone()) {
            return Err(format!(
                "branch `{branch}`: header `{name}` is given twice (header names ignore case)"
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("dtx-")
            || lower.starts_with("proxy-")
        {
            return Err(format!(
                "branch `{branch}`: header `{name}` is set by the coordinator or its HTTP client and cannot be registered"
            ));
        }
        check_header_value(&branch, name, value)?;
    }
    Ok(())
}

fn check_header_name(branch: &str, name: &str) -> Result<(), String> {
    let bad = |why: String| {
        format!(
            "branch `{branch}`: header name `{}` {why}; a name is 1 to {HEADER_NAME_MAX} letters, digits or any of !#$%&'*+-.^_`|~",
            excerpt(name)
        )
    };
    if name.is_empty() {
        return Err(bad("is empty".into()));
    }
    if let Some((at, c)) = name.chars().enumerate().find(|(_, c)| !is_token_char(*c)) {
        return Err(bad(format!(
            "has {} at character {}",
            describe_char(c),
            at + 1
        )));
    }
    if name.len() > HEADER_NAME_MAX {
        return Err(bad(format!("is {} characters long", name.len())));
    }
    Ok(())
}

fn check_header_value(branch: &str, name: &str, value: &str) -> Result<(), String> {
    let bad = |why: String| {
        format!(
            "branch `{branch}`: the value of header `{name}` {why}; a value is at most {HEADER_VALUE_MAX} characters of visible ASCII, spaces and tabs, with no whitespace at either end"
        )
    };
    let allowed = |c: char| c == ' ' || c == '\t' || c.is_ascii_graphic();
    if let Some((at, c)) = value.chars().enumerate().find(|(_, c)| !allowed(*c)) {
        return Err(bad(format!(
            "has {} at character {}",
            describe_char(c),
            at + 1
        )));
    }
    if value.len() > HEADER_VALUE_MAX {
        return Err(bad(format!("is {} characters long", value.len())));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err(bad("starts or ends with whitespace".into()));
    }
    Ok(())
}

/// RFC 9110's `tchar`: what a header name (a `token`) is made of.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A character named so that a person can find it: by its code point, and
/// as itself when it is visible.
fn describe_char(c: char) -> String {
    let code = u32::from(c);
    match c {
        ' ' => format!("a space (U+{code:04X})"),
        '`' => format!("a backtick (U+{code:04X})"),
        c if c.is_control() => format!("the control character U+{code:04X}"),
        c if c.is_whitespace() => format!("the whitespace character U+{code:04X}"),
        c => format!("`{c}` (U+{code:04X})"),
    }
}

/// Longest part of client text that an error message repeats.
const EXCERPT_CHARS: usize = 40;

/// Client text made safe to repeat in an error message: its first
/// [`EXCERPT_CHARS`] characters (cut by characters, never inside one), with
/// controls, backticks and the like escaped so the message stays one line.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c == '`' {
            out.extend(c.escape_unicode());
        } else if c.is_control() || (c.is_whitespace() && c != ' ') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks the branches of a mode whose branches are all registered at once:
/// at least one, unique ids, each with exactly the URLs the mode calls.
pub fn validate_branches(mode: Mode, branches: &[BranchSpec]) -> Result<(), String> {
    if branches.is_empty() {
        return Err(format!("a {mode} transaction needs at least one branch"));
    }
    let mut seen = std::collections::HashSet::new();
    for b in branches {
        validate_branch(mode, b)?;
        if !seen.insert(b.id.as_str()) {
            return Err(format!("branch id `{}` is used twice", b.id));
        }
    }
    Ok(())
}

/// Checks every branch of a saga and resolves its dependency graph.
///
/// Returns, for each branch, the indices of the branches it depends on.
/// When no branch names `depends_on`, each branch depends on the one before.
pub fn saga_dependencies(branches: &[BranchSpec]) -> Result<Vec<Vec<usize>>, String> {
    if branches.is_empty() {
        return Err("a saga needs at least one branch".into());
    }
    for b in branches {
        validate_branch(Mode::Saga, b)?;
    }
    saga_graph(branches)
}

/// The dependency graph of a saga's branches (unique ids, known
/// dependencies, no cycle), without the checks of each branch's content.
/// The driver rebuilds a stored saga with it: rules for ids and headers may
/// grow stricter than they were when the saga registered, and a saga already
/// running must still be driven to its end.
pub fn saga_graph(branches: &[BranchSpec]) -> Result<Vec<Vec<usize>>, String> {
    if branches.is_empty() {
        return Err("a saga needs at least one branch".into());
    }
    let mut index = HashMap::new();
    for (i, b) in branches.iter().enumerate() {
        if index.insert(b.id.as_str(), i).is_some() {
            return Err(format!("branch id `{}` is used twice", b.id));
        }
    }
    if branches.iter().all(|b| b.depends_on.is_none()) {
        return Ok((0..branches.len())
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect());
    }
    let mut deps = Vec::with_capacity(branches.len());
    for b in branches {
        let mut mine = Vec::new();
        for d in b.depends_on.iter().flatten() {
            let &j = index.get(d.as_str()).ok_or_else(|| {
                format!(
                    "branch `{}` depends on `{}`, which is not a branch of this saga",
                    b.id,
                    excerpt(d)
                )
            })?;
            if !mine.contains(&j) {
                mine.push(j);
            }
        }
        deps.push(mine);
    }
    if let Some(i) = find_cycle(&deps) {
        return Err(format!(
            "the dependencies form a cycle through branch `{}`",
            branches[i].id
        ));
    }
    Ok(deps)
}

/// Returns a node on a cycle of the graph, if there is one (Kahn's algorithm:
/// whatever cannot be ordered lies on or behind a cycle).
fn find_cycle(deps: &[Vec<usize>]) -> Option<usize> {
    let mut unmet: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..deps.len()).filter(|&i| unmet[i] == 0).collect();
    let mut ordered = 0;
    while let Some(done) = ready.pop() {
        ordered += 1;
        for (i, d) in deps.iter().enumerate() {
            if d.contains(&done) {
                unmet[i] -= 1;
                if unmet[i] == 0 {
                    ready.push(i);
                }
            }
        }
    }
    (ordered < deps.len()).then(|| unmet.iter().position(|&n| n > 0).unwrap_or(0))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
