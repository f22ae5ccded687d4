//! The demo's credentials, made fresh for each run the way an operator would:
//! API tokens from `dtx token new` (the order service registers with an
//! initiator token, the inventory asks for decisions and the demo reads with
//! reader tokens, all in namespace `shop`), and random signing keys for the
//! coordinator's and the order service's calls.

use anyhow::Context;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What the three processes and the demo itself are started with.
pub struct Credentials {
    /// The coordinator's `--tokens` file.
    pub tokens_file: PathBuf,
    /// The order service's token (initiator).
    pub orders_token: String,
    /// The inventory's token (reader: decision queries).
    pub inventory_token: String,
    /// The demo's own token (reader: it shows each order's transaction).
    pub demo_token: String,
    /// The coordinator's signing key, `ID:SECRET`.
    pub coordinator_key: String,
    /// The order service's signing key (its TCC Trys), `ID:SECRET`.
    pub orders_key: String,
}

impl Credentials {
    /// Makes tokens with `dtx` and keys, writing the token file in `dir`.
    pub fn create(dtx: &Path, dir: &Path) -> anyhow::Result<Credentials> {
        let tokens_file = dir.join("tokens");
        let token = |name: &str, role: &str| new_token(dtx, &tokens_file, name, role);
        Ok(Credentials {
            orders_token: token("orders", "initiator")?,
            inventory_token: token("inventory", "reader")?,
            demo_token: token("demo", "reader")?,
            coordinator_key: format!("dtx:{}", random_hex()?),
            orders_key: format!("orders:{}", random_hex()?),
            tokens_file,
        })
    }
}

/// `dtx token new` for `name` in namespace `shop`, its line appended to
/// `file`: the token.
fn new_token(dtx: &Path, file: &Path, name: &str, role: &str) -> anyhow::Result<String> {
    let output = std::process::Command::new(dtx)
        .args([
            "token",
            "new",
            "--name",
            name,
            "--role",
            role,
            "--namespace",
            "shop",
        ])
        .arg("--append-to")
        .arg(file)
        .output()
        .context("running dtx token new")?;
    anyhow::ensure!(output.status.success(), "dtx token new failed: {output:?}");
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// 32 random bytes from the system, in hex: a signing key's secret.
fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
