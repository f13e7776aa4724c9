//! `gale faults list` and `gale faults ack`: what is wrong in the fleet, and
//! the operator's acknowledgement of it.
//!
//! Faults come from pg-sink's `faults` table (one row per fault, its latest
//! event). An acknowledgement is the operator's act, kept in `fault_acks`
//! apart from the pipeline's rows, so it survives replays and may be given
//! whether the fault is open or already closed, as SCADA alarm lists allow.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use gale_runtime::config::Secret;

use crate::assets::connect;

type Row = (
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
    String,
);

/// Renders faults, open ones only unless `all`; newest first.
pub async fn list(
    url: &Secret,
    all: bool,
    asset: Option<&str>,
    limit: i64,
) -> anyhow::Result<String> {
    let pool = connect(url).await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT f.fault_id, f.asset_id, f.code, f.severity, f.status, f.opened_time, f.closed_time, \
                a.acknowledged_by, f.detail \
         FROM faults f LEFT JOIN fault_acks a USING (fault_id) \
         WHERE ($1 OR f.status <> 'CLOSED') AND ($2::text IS NULL OR f.asset_id = $2) \
         ORDER BY f.opened_time DESC LIMIT $3",
    )
    .bind(all)
    .bind(asset)
    .bind(limit)
    .fetch_all(&pool)
    .await
    .map_err(|e| missing_table(e, url))?;
    let id_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(8);
    let asset_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
    let code_w = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<id_w$}  {:<asset_w$}  {:<code_w$}  {:<8}  {:<7}  {:<19}  {:<19}  ack",
        "fault_id", "asset", "code", "severity", "status", "opened (UTC)", "closed (UTC)"
    );
    for (id, asset, code, severity, status, opened, closed, ack, _detail) in &rows {
        let _ = writeln!(
            out,
            "{id:<id_w$}  {asset:<asset_w$}  {code:<code_w$}  {severity:<8}  {status:<7}  {:<19}  {:<19}  {}",
            opened.format("%Y-%m-%d %H:%M:%S"),
            closed.map_or("-".to_string(), |c| c.format("%Y-%m-%d %H:%M:%S").to_string()),
            ack.as_deref().unwrap_or("-"),
        );
    }
    let _ = writeln!(out, "{} fault(s)", rows.len());
    Ok(out)
}

/// Acknowledges fault `id` as `by`, with an optional note. A fault id not
/// (yet) stored is refused: an acknowledgement names something seen.
pub async fn ack(url: &Secret, id: &str, by: &str, note: Option<&str>) -> anyhow::Result<String> {
    let pool = connect(url).await?;
    let known: Option<(String,)> = sqlx::query_as("SELECT status FROM faults WHERE fault_id = $1")
        .bind(id)
        .fetch_optional(&pool)
        .await
        .map_err(|e| missing_table(e, url))?;
    let Some((status,)) = known else {
        anyhow::bail!("no fault {id:?} in the faults table (see `gale faults list --all`)");
    };
    sqlx::query(
        "INSERT INTO fault_acks (fault_id, acknowledged_by, note) VALUES ($1, $2, $3) \
         ON CONFLICT (fault_id) DO UPDATE SET acknowledged_by = EXCLUDED.acknowledged_by, \
         note = EXCLUDED.note, acknowledged_at = now()",
    )
    .bind(id)
    .bind(by)
    .bind(note)
    .execute(&pool)
    .await
    .map_err(|e| missing_table(e, url))?;
    Ok(format!("acknowledged {id} ({status}) as {by}\n"))
}

pub(crate) fn missing_table(e: sqlx::Error, url: &Secret) -> anyhow::Error {
    let text = gale_pg_sink::db::redact(&e.to_string(), url);
    if text.contains("does not exist") {
        anyhow::anyhow!("{text}: run `gale db migrate` first")
    } else {
        anyhow::anyhow!(text)
    }
}
