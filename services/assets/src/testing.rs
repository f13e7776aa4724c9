//! Test support (feature `testing`): a fresh, migrated database per test on
//! the test Postgres server.
//!
//! The server is `DATABASE_URL` when set (`make test` sets it, starting a
//! private cluster when none is running), else 127.0.0.1:5432 as user
//! `postgres` or as the current user, the way `scripts/lib.sh` looks for
//! one. Without any, the test fails and says so: these tests are about the
//! real database, so they never pass silently without one.

use sqlx::{Connection, PgConnection, PgPool};

/// pg-sink's migrations, which own the registry's schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../pg-sink/migrations");

/// A uniquely named database, dropped with the value.
pub struct TestDatabase {
    /// URL of the database.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
    name: String,
    admin_url: String,
}

/// The URL of the test server's maintenance database.
pub async fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
    let candidates = [
        "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
        format!("postgres://{user}@127.0.0.1:5432/postgres"),
    ];
    let mut failures = Vec::new();
    for url in candidates {
        match PgConnection::connect(&url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return url;
            }
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    panic!(
        "no Postgres for the tests: set DATABASE_URL or run them with `make test` (scripts/test.sh), \
         which finds or starts one ({})",
        failures.join("; ")
    );
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn unique_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "gale_assets_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDatabase {
    /// An empty database.
    pub async fn empty() -> TestDatabase {
        let admin_url = server_url().await;
        let name = unique_name();
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the test Postgres server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        let pool = PgPool::connect(&url)
            .await
            .expect("connect to the test database");
        TestDatabase {
            url,
            pool,
            name,
            admin_url,
        }
    }

    /// A database with pg-sink's migrations applied.
    pub async fn migrated() -> TestDatabase {
        let db = TestDatabase::empty().await;
        MIGRATOR.run(&db.pool).await.expect("apply the migrations");
        db
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // On a thread of its own, so it works inside and outside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
