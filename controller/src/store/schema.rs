//! Schema migrations, applied in order and recorded in SQLite's `user_version`.

/// Each entry migrates from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE objects (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL UNIQUE,
        generation INTEGER NOT NULL,
        document TEXT NOT NULL,
        hash TEXT NOT NULL,
        owner TEXT NOT NULL,
        ref_name TEXT,
        allow_recreate INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL,
        deleting TEXT,
        PRIMARY KEY (kind, name)
    );
    CREATE INDEX objects_ref ON objects (kind, ref_name);
    CREATE TABLE status (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        view TEXT NOT NULL,
        internal TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        reason TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_object ON events (kind, name, id);
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        step TEXT NOT NULL,
        started TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        outcome TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX journal_uid ON journal (uid, id);
    CREATE INDEX journal_outcome ON journal (outcome);
    CREATE TABLE leases (
        ip TEXT PRIMARY KEY,
        mac TEXT NOT NULL,
        vm_uid TEXT NOT NULL UNIQUE
    );
    CREATE TABLE handles (
        vm_uid TEXT PRIMARY KEY,
        handles TEXT NOT NULL
    );
    "#,
    // 2: a VM may hold a reservation (`pending`) beside its active lease, so an
    // address change never frees the address a running VMM still uses.
    r#"
    CREATE TABLE leases_v2 (
        ip TEXT PRIMARY KEY,
        mac TEXT NOT NULL,
        vm_uid TEXT NOT NULL,
        pending INTEGER NOT NULL DEFAULT 0,
        UNIQUE (vm_uid, pending)
    );
    INSERT INTO leases_v2 (ip, mac, vm_uid, pending) SELECT ip, mac, vm_uid, 0 FROM leases;
    DROP TABLE leases;
    ALTER TABLE leases_v2 RENAME TO leases;
    "#,
    // 3: Workspaces: the latest `banger workspace sync` request (written by the API,
    // read by the engine: never the status row, which the reconcile rewrites) and the
    // manifest of what the last copy wrote into the guest.
    r#"
    CREATE TABLE workspace_sync_requests (
        uid TEXT PRIMARY KEY,
        serial INTEGER NOT NULL,
        force INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE workspace_manifests (
        uid TEXT PRIMARY KEY,
        manifest TEXT NOT NULL
    );
    "#,
    // 4: whether a status's `view` is already the API's text of it (a status without an
    // Image resolution serialises member for member as the API's view does), so that a
    // list copies it without reading it. Rows written before say 0 and are read.
    r#"
    ALTER TABLE status ADD COLUMN as_listed INTEGER NOT NULL DEFAULT 0;
    "#,
    // 5: only unfinished journal rows are looked up by outcome (recovery's
    // `journal_unfinished`): an index of those few rows replaces the index of every
    // row's outcome, which each step's two journal writes moved between regions.
    r#"
    DROP INDEX journal_outcome;
    CREATE INDEX journal_running ON journal (id) WHERE outcome = 'running';
    "#,
];
