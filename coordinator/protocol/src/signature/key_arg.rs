//! A command-line value parser for signing keys (feature `clap`), shared by
//! `dtx serve` and the sample services: its error names the flag and why,
//! and never quotes the value, as clap's own error would (the value holds
//! the secret).

use super::{KeyError, SigningKey};

/// Parses `ID:SECRET`, or with [`KeyParser::secret_as`] a bare secret as the
/// key of a fixed id.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyParser {
    fixed_id: Option<&'static str>,
}

impl KeyParser {
    /// Reads `ID:SECRET`.
    pub fn id_and_secret() -> KeyParser {
        KeyParser { fixed_id: None }
    }

    /// Reads a bare secret as the key `id` (a deprecated one-secret flag).
    pub fn secret_as(id: &'static str) -> KeyParser {
        KeyParser { fixed_id: Some(id) }
    }
}

impl clap::builder::TypedValueParser for KeyParser {
    type Value = SigningKey;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SigningKey, clap::Error> {
        let flag = arg
            .and_then(clap::Arg::get_long)
            .map_or_else(|| "the key".to_owned(), |long| format!("--{long}"));
        let fail = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{flag}: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail("the key is not valid UTF-8".to_owned()))?;
        let key = match self.fixed_id {
            Some(id) => SigningKey::new(id, text),
            None => text.parse(),
        };
        key.map_err(|e: KeyError| fail(e.to_string()))
    }
}
