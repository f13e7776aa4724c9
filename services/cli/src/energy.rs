//! `gale energy`: the fleet's recent hours and the day's peak hours, from
//! the roll-up tables pg-sink keeps (`agg_fleet_1h`, `agg_site_1h`,
//! `peaks`), for an operator without a dashboard at hand.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use gale_runtime::config::Secret;

use crate::assets::connect;

type HourRow = (
    DateTime<Utc>,
    i32,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

type PeakRow = (
    String,
    Option<String>,
    i32,
    Option<DateTime<Utc>>,
    Option<f64>,
    String,
    bool,
);

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

/// Renders the last `hours` fleet hours and the peak hours of `date`
/// (the latest day with peaks when `None`).
pub async fn report(url: &Secret, hours: i64, date: Option<NaiveDate>) -> anyhow::Result<String> {
    let pool = connect(url).await?;
    let rows: Vec<HourRow> = sqlx::query_as(
        "SELECT window_start, revision, assets, production_kwh, expected_energy_kwh, \
                performance_ratio, availability, consumption_kwh \
         FROM agg_fleet_1h ORDER BY window_start DESC LIMIT $1",
    )
    .bind(hours)
    .fetch_all(&pool)
    .await
    .map_err(|e| crate::faults::missing_table(e, url))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet, hourly (UTC)   rev  assets  produced kWh  expected kWh  perf. ratio  availability  consumed kWh"
    );
    for (start, rev, assets, prod, exp, ratio, avail, cons) in rows.iter().rev() {
        let _ = writeln!(
            out,
            "{:<20}  {rev:>3}  {assets:>6}  {:>12}  {:>12}  {:>11}  {:>12}  {:>12}",
            start.format("%Y-%m-%d %H:%M"),
            num(*prod, 1),
            num(*exp, 1),
            num(*ratio, 3),
            avail.map_or_else(|| "-".into(), |a| format!("{:.1} %", a * 100.0)),
            num(*cons, 1),
        );
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "(no closed fleet hour yet: hours close once every site has sent the next one)"
        );
    }
    let date: Option<NaiveDate> = match date {
        Some(d) => Some(d),
        None => sqlx::query_scalar("SELECT max(local_date) FROM peaks")
            .fetch_one(&pool)
            .await
            .map_err(|e| crate::faults::missing_table(e, url))?,
    };
    let Some(date) = date else {
        let _ = writeln!(out, "\nno peak hours yet");
        return Ok(out);
    };
    let peaks: Vec<PeakRow> = sqlx::query_as(
        "SELECT scope, site_id, rank, hour_start, consumption_kwh, season, provisional \
         FROM peaks WHERE local_date = $1 \
         ORDER BY scope DESC, site_id NULLS FIRST, rank",
    )
    .bind(date)
    .fetch_all(&pool)
    .await
    .map_err(|e| crate::faults::missing_table(e, url))?;
    let _ = writeln!(out, "\npeak consumption hours of {date}");
    let _ = writeln!(
        out,
        "scope   site        rank  hour (UTC)         consumed kWh  season    status"
    );
    for (scope, site, rank, hour, kwh, season, provisional) in &peaks {
        let _ = writeln!(
            out,
            "{scope:<6}  {:<10}  {rank:>4}  {:<17}  {:>12}  {season:<8}  {}",
            site.as_deref().unwrap_or("-"),
            hour.map_or_else(
                || "-".to_string(),
                |h| h.format("%Y-%m-%d %H:%M").to_string()
            ),
            num(*kwh, 2),
            if *provisional { "so far" } else { "final" },
        );
    }
    Ok(out)
}
