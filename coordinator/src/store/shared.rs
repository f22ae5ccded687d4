//! What the two backends share, and only that: the statements both run as
//! they are ([`statements`]), the rows as the database returns them and
//! their decoding ([`rows`]), the reads, written once for both drivers
//! ([`reads`]), the listing cursor ([`cursor`]), the sentences of the
//! history and of refusals ([`history`]), and what `sqlx`'s errors mean to a
//! caller ([`sqlx_errors`]).
//!
//! Each backend's writes are its own: SQLite's run on its writer thread's
//! `rusqlite` connection (`store::sqlite`), PostgreSQL's are batched or run
//! in a transaction of their own (`store::postgres`).

pub(super) mod cursor;
pub(super) mod history;
pub(super) mod reads;
pub(super) mod rows;
pub(super) mod sqlx_errors;
pub(super) mod statements;
