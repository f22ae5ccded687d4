//! A cluster's credentials, made fresh for each cluster the way an operator
//! would: API tokens from the coordinator's own `dtx token new` (the order
//! service registers with an initiator token, the inventory asks for
//! decisions with a reader token, both in namespace `shop`; the harness reads
//! everything with an operator token), and random signing keys for the
//! coordinators' and the order service's calls. Every service checks them,
//! as in production.

use crate::TestSupportError;
use std::path::Path;

/// What the services and the harness are started with.
pub struct Credentials {
    /// The text of the coordinators' `--tokens` file.
    pub tokens_file: Vec<u8>,
    /// The harness's own token (operator: it reads every namespace).
    pub harness_token: String,
    /// The order service's token (initiator).
    pub orders_token: String,
    /// The inventory's token (reader: decision queries).
    pub inventory_token: String,
    /// The coordinators' signing key, `ID:SECRET` (both sign with it).
    pub coordinator_key: String,
    /// The order service's signing key (its TCC Trys), `ID:SECRET`.
    pub orders_key: String,
}

impl Credentials {
    /// Makes tokens with the coordinator binary `dtx` and random keys.
    pub fn create(dtx: &Path) -> Result<Credentials, TestSupportError> {
        let file = std::env::temp_dir().join(format!(
            "dtx-harness-tokens-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let token = |name: &str, role: &str, namespace: &str| {
            let output = std::process::Command::new(dtx)
                .args(["token", "new", "--name", name, "--role", role])
                .args(["--namespace", namespace, "--append-to"])
                .arg(&file)
                .output()
                .map_err(|e| service("run dtx token new", e))?;
            if !output.status.success() {
                return Err(service("run dtx token new", format!("{output:?}")));
            }
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        let harness_token = token("harness", "operator", "ops")?;
        let orders_token = token("orders", "initiator", "shop")?;
        let inventory_token = token("inventory", "reader", "shop")?;
        let tokens_file = std::fs::read(&file).map_err(|e| service("read the token file", e))?;
        let _ = std::fs::remove_file(&file);
        let secret = || {
            let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
            format!("{}{}", a.simple(), b.simple())
        };
        Ok(Credentials {
            tokens_file,
            harness_token,
            orders_token,
            inventory_token,
            coordinator_key: format!("dtx:{}", secret()),
            orders_key: format!("orders:{}", secret()),
        })
    }
}

fn service(what: &str, why: impl std::fmt::Display) -> TestSupportError {
    TestSupportError::Service {
        what: what.to_owned(),
        why: why.to_string(),
    }
}
