//! Who may do what on the daemon's socket.
//!
//! The socket file is `0660 root:<group>` (`banger daemon --socket-group`, default
//! `banger`): the file system already keeps everyone else from connecting. The daemon
//! checks again, from the credentials the kernel recorded at `connect(2)`
//! ([`crate::host::peer`]):
//! - **admin**: root, or the daemon's own user (a daemon run by a user serves that
//!   user), may do everything;
//! - **member**: a process in the socket's group (primary or supplementary) may read,
//!   apply, delete, retry, connect to guests and collect garbage; but not
//!   `gc --include-orphans` (it removes VMs that nobody declares any more), and every
//!   host path its applies name (an Image's kernel, initrd and rootfs, a Workspace's
//!   source) must be readable by the member itself (checked as the member by
//!   [`crate::host::read_as`] in [`crate::sources::apply`]);
//! - **everyone else** is refused at connect: the connection is closed before any HTTP
//!   ([`super::listener`]).
//!
//! [`AccessPolicy::role_of`], [`action_of`] and [`decide`] are pure functions over plain
//! values; [`authorize`] is the one place the API applies them, to every routed
//! request. A route the table in [`action_of`] does not know is for admins only.

use axum::extract::{MatchedPath, Query, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::server::{ApiError, GcQuery};
use crate::host::peer::{Credentials, Peer};

/// What a client is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Root or the daemon's own user: everything.
    Admin,
    /// A member of the socket's group: everything but the admin-only actions, and host
    /// paths only as far as the member may read them.
    Member,
}

/// The group whose members may use the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    /// Its name, for messages.
    pub name: String,
    /// Its gid.
    pub gid: u32,
}

/// Who is admin and who is member, for one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The daemon's effective uid: admin, like root.
    pub daemon_uid: u32,
    /// The socket's group, when the daemon gave the socket to one (as root only).
    pub group: Option<SocketGroup>,
}

impl AccessPolicy {
    /// The role of a client with `credentials`; `None`: refused at connect.
    pub fn role_of(&self, credentials: &Credentials) -> Option<Role> {
        if credentials.uid == 0 || credentials.uid == self.daemon_uid {
            return Some(Role::Admin);
        }
        match &self.group {
            Some(group) if credentials.in_group(group.gid) => Some(Role::Member),
            _ => None,
        }
    }

    /// One line for the log when a client is refused at connect.
    pub fn refusal(&self, credentials: &Credentials) -> String {
        match &self.group {
            Some(group) => format!(
                "uid {} is neither root nor in group {} (gid {})",
                credentials.uid, group.name, group.gid
            ),
            None => format!(
                "uid {} is neither root nor the daemon's user (uid {}), and the socket has no group",
                credentials.uid, self.daemon_uid
            ),
        }
    }
}

/// The client of one connection, as the handlers see it (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Who connected.
    pub peer: Peer,
    /// What they may do.
    pub role: Role,
}

impl Client {
    /// The credentials host paths must be checked with: `None` for an admin (the
    /// daemon reads as itself), the client's for a member.
    pub fn reads_as(&self) -> Option<&Credentials> {
        match self.role {
            Role::Admin => None,
            Role::Member => Some(&self.peer.credentials),
        }
    }
}

/// What a request does, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any `GET` but connect: health, objects, describe, events, logs, ssh identity.
    Read,
    /// `POST /v1/apply` (dry runs included).
    Apply,
    /// `POST /v1/delete`.
    Delete,
    /// `POST /v1/objects/{kind}/{name}/retry`.
    Retry,
    /// `GET /v1/vms/{name}/connect`: a byte stream to a guest port.
    Connect,
    /// `POST /v1/gc` without `includeOrphans=true`.
    Gc,
    /// `POST /v1/gc?includeOrphans=true` (dry run or not; or a query that does not
    /// parse, so a malformed one never slips through).
    GcOrphans,
    /// A route this table does not know: admins only, so a new route is closed until
    /// it is listed here.
    Unlisted,
}

/// The action of a request from its method, its route template (axum's
/// [`MatchedPath`], e.g. `/v1/objects/{kind}/{name}/retry`) and its URI (for the query,
/// decoded exactly as the handler decodes it).
pub fn action_of(method: &Method, route: &str, uri: &Uri) -> Action {
    match (method.as_str(), route) {
        ("GET", "/v1/vms/{name}/connect") => Action::Connect,
        (
            "GET",
            "/v1/healthz"
            | "/v1/objects"
            | "/v1/objects/{kind}/{name}"
            | "/v1/objects/{kind}/{name}/describe"
            | "/v1/events"
            | "/v1/vms/{name}/logs"
            | "/v1/ssh-identity"
            // An export reads the guest's work; it changes nothing.
            | "/v1/workspaces/{name}/export",
        ) => Action::Read,
        ("POST", "/v1/apply") => Action::Apply,
        ("POST", "/v1/delete") => Action::Delete,
        // A refresh re-runs an Image's tag check now (and with `apply`, moves it to
        // the new digest, as an apply of the same spec would): a retry, for members too.
        // A workspace sync asks for the copy a retry would make, unless the guest
        // changed.
        (
            "POST",
            "/v1/objects/{kind}/{name}/retry"
            | "/v1/images/{name}/refresh"
            | "/v1/workspaces/{name}/sync",
        ) => Action::Retry,
        ("POST", "/v1/gc") => match Query::<GcQuery>::try_from_uri(uri) {
            Ok(Query(q)) if !q.include_orphans => Action::Gc,
            _ => Action::GcOrphans,
        },
        _ => Action::Unlisted,
    }
}

/// Whether `role` may do `action`; the refusal says why, in one line.
pub fn decide(role: Role, action: Action) -> Result<(), String> {
    match (role, action) {
        (Role::Admin, _) => Ok(()),
        (
            Role::Member,
            Action::Read
            | Action::Apply
            | Action::Delete
            | Action::Retry
            | Action::Connect
            | Action::Gc,
        ) => Ok(()),
        (Role::Member, Action::GcOrphans) => Err(
            "gc --include-orphans is for root only: it removes VMs that no spec declares any more"
                .into(),
        ),
        (Role::Member, Action::Unlisted) => Err("this request is for root only".into()),
    }
}

/// The middleware: every routed request passes [`decide`] for its [`Client`] (set per
/// connection by the listener) or gets a 403 `forbidden`. A request without a client
/// is refused: the API is only served through [`super::listener::serve`].
pub async fn authorize(request: Request, next: Next) -> Response {
    let Some(client) = request.extensions().get::<Client>() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no peer credentials for this connection",
        )
        .into_response();
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let action = action_of(request.method(), &route, request.uri());
    match decide(client.role, action) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            tracing::info!(uid = client.peer.credentials.uid, pid = ?client.peer.pid,
                method = %request.method(), route, "refused: {why}");
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn policy(daemon_uid: u32, group: Option<u32>) -> AccessPolicy {
        AccessPolicy {
            daemon_uid,
            group: group.map(|gid| SocketGroup {
                name: "banger".into(),
                gid,
            }),
        }
    }

    #[test]
    fn roles_root_members_and_everyone_else() {
        let p = policy(0, Some(998));
        assert_eq!(p.role_of(&creds(0, 0, &[])), Some(Role::Admin));
        assert_eq!(
            p.role_of(&creds(1000, 1000, &[27, 998])),
            Some(Role::Member)
        );
        assert_eq!(p.role_of(&creds(1000, 998, &[])), Some(Role::Member));
        assert_eq!(p.role_of(&creds(1001, 1001, &[27])), None);
        assert_eq!(
            p.refusal(&creds(1001, 1001, &[27])),
            "uid 1001 is neither root nor in group banger (gid 998)"
        );
        // Without a group, only root and the daemon's own user.
        let p = policy(1000, None);
        assert_eq!(p.role_of(&creds(1000, 1000, &[])), Some(Role::Admin));
        assert_eq!(p.role_of(&creds(0, 0, &[])), Some(Role::Admin));
        assert_eq!(p.role_of(&creds(1001, 998, &[998])), None);
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn every_route_has_its_action() {
        let get = Method::GET;
        let post = Method::POST;
        let none = uri("/");
        for route in [
            "/v1/healthz",
            "/v1/objects",
            "/v1/objects/{kind}/{name}",
            "/v1/objects/{kind}/{name}/describe",
            "/v1/events",
            "/v1/vms/{name}/logs",
            "/v1/ssh-identity",
            "/v1/workspaces/{name}/export",
        ] {
            assert_eq!(action_of(&get, route, &none), Action::Read, "{route}");
        }
        assert_eq!(
            action_of(
                &get,
                "/v1/vms/{name}/connect",
                &uri("/v1/vms/a/connect?port=22")
            ),
            Action::Connect
        );
        assert_eq!(action_of(&post, "/v1/apply", &none), Action::Apply);
        assert_eq!(action_of(&post, "/v1/delete", &none), Action::Delete);
        assert_eq!(
            action_of(&post, "/v1/objects/{kind}/{name}/retry", &none),
            Action::Retry
        );
        assert_eq!(
            action_of(&post, "/v1/images/{name}/refresh", &none),
            Action::Retry
        );
        assert_eq!(
            action_of(&post, "/v1/workspaces/{name}/sync", &none),
            Action::Retry
        );
        let gc = |q: &str| action_of(&post, "/v1/gc", &uri(&format!("/v1/gc{q}")));
        assert_eq!(gc(""), Action::Gc);
        assert_eq!(gc("?dryRun=true"), Action::Gc);
        assert_eq!(gc("?dryRun=true&includeOrphans=false"), Action::Gc);
        for orphans in [
            "?includeOrphans=true",
            "?dryRun=true&includeOrphans=true",
            // Percent-encoded as the handler decodes it.
            "?include%4Frphans=true",
            "?includeOrphans=%74rue",
            // Not one clear value: refused rather than guessed.
            "?includeOrphans=yes",
            "?includeOrphans=false&includeOrphans=true",
        ] {
            assert_eq!(gc(orphans), Action::GcOrphans, "{orphans}");
        }
        // Unknown method/route pairs are admin-only.
        assert_eq!(action_of(&post, "/v1/healthz", &none), Action::Unlisted);
        assert_eq!(
            action_of(&Method::DELETE, "/v1/objects", &none),
            Action::Unlisted
        );
        assert_eq!(action_of(&post, "/v1/new-thing", &none), Action::Unlisted);
    }

    #[test]
    fn members_may_do_all_but_orphan_gc_and_unlisted_routes() {
        use Action::*;
        for action in [Read, Apply, Delete, Retry, Connect, Gc, GcOrphans, Unlisted] {
            assert_eq!(decide(Role::Admin, action), Ok(()), "{action:?}");
        }
        for action in [Read, Apply, Delete, Retry, Connect, Gc] {
            assert_eq!(decide(Role::Member, action), Ok(()), "{action:?}");
        }
        assert_eq!(
            decide(Role::Member, GcOrphans),
            Err("gc --include-orphans is for root only: it removes VMs that no spec declares any more".into())
        );
        assert!(decide(Role::Member, Unlisted).is_err());
    }
}
