//! What the MongoDB driver's errors mean to an operator: transient or not, and told in one line.

use mongodb::error::ErrorKind;

use super::Login;

/// Errors worth another try: the server or the network, not the request (nor the login,
/// which a selection timeout may carry).
pub(super) fn transient(e: &mongodb::error::Error) -> bool {
    if is_login_failure(e) {
        return false;
    }
    e.contains_label("RetryableWriteError")
        || matches!(
            *e.kind,
            ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. }
        )
        || matches!(&*e.kind, ErrorKind::Command(c) if [91, 189, 10107, 11600, 11602, 13435, 13436].contains(&c.code))
}

/// A driver error in one line for the operator: what happened, the user when it is about
/// logging in, and what to check. The driver's full error is left to `-v`.
pub(super) fn explain(e: &mongodb::error::Error, login: &Login) -> String {
    let unauthorized = matches!(&*e.kind, ErrorKind::Command(c) if c.code == UNAUTHORIZED);
    match (&login.user, &*e.kind) {
        (None, _) if is_login_failure(e) || unauthorized => {
            return "the server asks to log in: give a user and password in --mongo \
                    (mongodb://USER:PASSWORD@HOST:PORT/?authSource=admin)"
                .to_string();
        }
        (Some(user), _) if is_login_failure(e) => {
            return format!(
                "user '{user}' cannot log in (authentication failed): check the user name and password in \
                 --mongo, and that the user is defined in database '{}' (authSource in the URI)",
                login.auth_source
            );
        }
        (Some(user), ErrorKind::Command(c)) if unauthorized => {
            return format!(
                "user '{user}' is not allowed to do this ({}): grant it the readWrite role on database '{}'",
                c.message, login.database
            );
        }
        _ => {}
    }
    match &*e.kind {
        ErrorKind::Command(c) => format!("the server refused: {} ({} {})", c.message, c.code_name, c.code),
        ErrorKind::DnsResolve { message, .. } => {
            format!("the host name of --mongo cannot be resolved ({message}): check the URI")
        }
        ErrorKind::InvalidTlsConfig { message, .. } => {
            format!("TLS is misconfigured ({message}): check the URI's tls options")
        }
        _ if transient(e) => {
            format!("the server does not answer ({}); is it running, and is --mongo right?", short_cause(e))
        }
        _ => one_line(e),
    }
}

/// MongoDB's AuthenticationFailed.
pub(super) const AUTHENTICATION_FAILED: i32 = 18;
/// MongoDB's Unauthorized: logged in, but the user lacks a privilege.
pub(super) const UNAUTHORIZED: i32 = 13;

/// Whether the server refused the login, told directly or (when the connection is made for
/// server selection) as the server's error inside a selection timeout.
pub(super) fn is_login_failure(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(c) => c.code == AUTHENTICATION_FAILED,
        ErrorKind::ServerSelection { message, .. } => message.contains("Kind: Authentication"),
        _ => false,
    }
}

/// Why the server does not answer, in a few words: the server's own error from a selection
/// timeout's topology dump, or the error itself.
pub(super) fn short_cause(e: &mongodb::error::Error) -> String {
    if let ErrorKind::ServerSelection { message, .. } = &*e.kind
        && let Some(start) = message.find("Error: Kind: ").map(|i| i + "Error: Kind: ".len())
    {
        let rest = &message[start..];
        let end = rest.find(", labels").unwrap_or(rest.len());
        return rest[..end].trim_start_matches("I/O error: ").to_string();
    }
    match &*e.kind {
        ErrorKind::Io(io) => io.to_string(),
        _ => one_line(e),
    }
}

/// The driver's message, cut at its first line and before any topology dump.
pub(super) fn one_line(e: &mongodb::error::Error) -> String {
    let text = e.kind.to_string();
    let text = text.lines().next().unwrap_or_default();
    text.split(" Topology:").next().unwrap_or_default().trim_end_matches([',', ' ']).to_string()
}

/// The URI without its password.
pub(super) fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &uri[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..])
        }
        _ => uri.to_string(),
    }
}
