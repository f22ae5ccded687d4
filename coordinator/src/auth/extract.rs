//! The request side of tokens: [`Access`] (open, or a token file) in the
//! API's state, and the [`Authenticated`] extractor that turns a request's
//! `Authorization: Bearer` header into a [`Caller`] or a 401.

use super::{Caller, Tokens};
use crate::api::AppState;
use crate::api::problem::ApiError;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;

/// How callers are recognised.
#[derive(Debug, Clone)]
pub enum Access {
    /// No token file: every caller is [`Caller::open`].
    Open,
    /// Only the tokens of this file.
    Tokens(Arc<Tokens>),
}

impl Access {
    /// The caller behind an `Authorization` header value (`None`: absent).
    pub fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let tokens = match self {
            Access::Open => return Ok(Caller::open()),
            Access::Tokens(tokens) => tokens,
        };
        let Some(value) = authorization else {
            return Err(ApiError::Unauthorized(
                "this coordinator needs an API token: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("the `Authorization` header must be `Bearer <token>`".into())
            })?;
        tokens.caller(token).cloned().ok_or_else(|| {
            ApiError::Unauthorized("the token is not known to this coordinator".into())
        })
    }
}

/// The caller of a request, recognised by its token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl Authenticated {
    /// The caller, if its role may register, add branches, commit and
    /// abort; otherwise a 403.
    pub fn writer(self) -> Result<Caller, ApiError> {
        if self.0.may_write() {
            Ok(self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "token `{}` has the role `{}`, which may only read; this call needs `initiator` or `operator`",
                self.0.name, self.0.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::Unauthorized("the `Authorization` header is not readable text".into())
            })?),
        };
        state.access.caller(header).map(Authenticated)
    }
}
