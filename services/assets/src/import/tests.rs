use super::*;
use crate::registry::CurvePoint;

fn errors(sources: &[(&str, &str)], table: Option<TableKind>) -> Vec<String> {
    parse_texts(sources, table)
        .unwrap_err()
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn has(errors: &[String], needles: &[&str]) {
    assert!(
        errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
        "no error with {needles:?} in:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_operators_turbine_table_loads_as_turbines_with_their_model() {
    let set = parse_texts(
        &[(
            "turbines.csv",
            "asset_id,latitude,longitude,rated_power_kw,hub_height_m,rotor_diameter_m,model\n\
             NW-01,54.1,7.9,2000,80,90,GX2000-90\n\
             NW-02,54.2,7.8,2000,95,90,GX2000-90\n\
             NW-03,54.3,7.7,3000,,,\n",
        )],
        None,
    )
    .unwrap();
    assert_eq!(set.assets.len(), 3);
    let first = &set.assets[0];
    assert_eq!(first.key, "NW-01");
    assert_eq!(
        first.value("model_id"),
        Some(&Value::Text("GX2000-90".into()))
    );
    assert_eq!(first.value("hub_height_m"), Some(&Value::Number(80.0)));
    assert_eq!(
        first.defaults,
        vec![("kind", Value::Kind(AssetKind::Turbine))]
    );
    assert_eq!(first.value("kind"), None);
    assert_eq!(set.assets[2].value("model_id"), Some(&Value::Null));
    assert_eq!(
        set.assets[2].defaults,
        vec![("kind", Value::Kind(AssetKind::Turbine))],
        "rated power alone makes a turbine"
    );
    assert_eq!(
        set.models.len(),
        1,
        "the model the turbines name is created"
    );
    let model = &set.models[0];
    assert_eq!(model.key, "GX2000-90");
    assert!(model.values.is_empty(), "never overwrites a stored model");
    assert_eq!(
        model.defaults,
        vec![
            ("rated_power_kw", Value::Number(2000.0)),
            ("rotor_diameter_m", Value::Number(90.0)),
            ("hub_height_m", Value::Number(80.0)),
        ]
    );
    assert_eq!(model.origin.to_string(), "turbines.csv line 2");
}

#[test]
fn power_curves_accept_common_headers_and_separators() {
    for text in [
        "model,wind_speed_ms,power_kw\nGX,3,20\nGX,4,80\nGY,3,10\n",
        "Model ID;Wind Speed (m/s);Power (kW)\nGX;3;20\nGX;4;80\nGY;3;10\n",
        "model_id\tws\tpower\nGX\t3\t20\nGX\t4\t80\nGY\t3\t10\n",
        "\u{feff}turbine_model,wind_speed,kw\r\nGX,3,20\r\nGX,4,80\r\nGY,3,10\r\n",
    ] {
        let set = parse_texts(&[("curve.csv", text)], None).unwrap();
        assert_eq!(set.curves.len(), 2, "{text}");
        assert_eq!(
            set.curves[0].points,
            vec![
                CurvePoint {
                    wind_speed_ms: 3.0,
                    power_kw: 20.0
                },
                CurvePoint {
                    wind_speed_ms: 4.0,
                    power_kw: 80.0
                }
            ]
        );
        assert_eq!(
            set.models.len(),
            2,
            "models named only by curves are created"
        );
    }
}

#[test]
fn other_units_are_refused_by_name() {
    let e = errors(
        &[("curve.csv", "model,wind_speed_ms,power_w\nGX,3,20000\n")],
        None,
    );
    has(
        &e,
        &[
            "curve.csv line 1",
            "column power_w",
            "power in W is not accepted",
            "kW",
            "power_kw",
        ],
    );
    let e = errors(
        &[(
            "t.csv",
            "asset_id,Hub height (ft),rated_power_mw\nT1,260,2\n",
        )],
        None,
    );
    has(&e, &["column Hub height (ft)", "hub height in ft"]);
    has(&e, &["column rated_power_mw", "MW"]);
    let e = errors(
        &[("curve.csv", "model,wind speed (km/h),power_kw\nGX,10,20\n")],
        None,
    );
    has(&e, &["km/h", "wind_speed_ms"]);
}

#[test]
fn every_bad_row_is_reported_with_line_and_column() {
    let text = "asset_id,kind,site_id,capacity_kw,latitude,longitude,commissioned_on,vacant\n\
                T1,turbine,farm-a,3000,55.1,8.1,2019-05-01,\n\
                T2,windmill,farm-a,abc,55.1,8.1,,\n\
                M1,meter,grid-n,,95,8.1,01/02/2020,maybe\n\
                ,meter,grid-n,,,,,\n\
                T1,turbine,farm-a,3000,55.1,8.1,,\n\
                M2,meter,grid-n\n";
    let e = errors(&[("assets.csv", text)], None);
    has(
        &e,
        &["assets.csv line 3", "column kind", "windmill", "turbine"],
    );
    has(
        &e,
        &[
            "assets.csv line 3",
            "column capacity_kw",
            "number above 0",
            "\"abc\"",
        ],
    );
    has(&e, &["assets.csv line 4", "column latitude", "-90 to 90"]);
    has(
        &e,
        &["assets.csv line 4", "column commissioned_on", "YYYY-MM-DD"],
    );
    has(&e, &["assets.csv line 4", "column vacant", "true or false"]);
    has(&e, &["assets.csv line 5", "column asset_id", "empty"]);
    has(
        &e,
        &[
            "assets.csv line 6",
            "duplicate asset_id `T1`",
            "first at assets.csv line 2",
        ],
    );
    has(&e, &["assets.csv line 7", "has 3 fields, the header has 8"]);
    assert_eq!(e.len(), 8, "{}", e.join("\n"));
}

#[test]
fn curves_must_increase_and_stay_non_negative() {
    let e = errors(
        &[(
            "curve.csv",
            "model,wind_speed_ms,power_kw\nGX,3,20\nGX,5,-1\nGX,4,80\nGX,4,90\nGX,x,1\n",
        )],
        None,
    );
    has(&e, &["curve.csv line 3", "column power_kw", "negative"]);
    has(
        &e,
        &[
            "curve.csv line 5",
            "not increasing in wind speed",
            "4 m/s after 4 m/s",
        ],
    );
    has(
        &e,
        &["curve.csv line 6", "column wind_speed_ms", "not a number"],
    );
    assert_eq!(e.len(), 3, "{}", e.join("\n"));
}

#[test]
fn ids_are_unique_across_files() {
    let e = errors(
        &[
            ("a.csv", "site_id,time_zone\nfarm-a,Europe/Berlin\n"),
            ("b.csv", "site_id,time_zone\nfarm-a,UTC\n"),
            ("c1.csv", "model,ws,power\nGX,3,20\nGX,4,30\n"),
            ("c2.csv", "model,ws,power\nGX,3,20\nGX,4,30\n"),
        ],
        None,
    );
    has(
        &e,
        &[
            "b.csv line 2",
            "duplicate site_id `farm-a`",
            "first at a.csv line 2",
        ],
    );
    has(
        &e,
        &["c2.csv line 2", "power curve of model `GX` is given twice"],
    );
    assert_eq!(e.len(), 2, "{}", e.join("\n"));
}

#[test]
fn sites_need_iana_time_zones() {
    let set = parse_texts(
        &[(
            "sites.csv",
            "site_id,name,time_zone,latitude,longitude\nfarm-a,North,Europe/Copenhagen,55.2,8.1\ngrid-n,,,,\n",
        )],
        None,
    )
    .unwrap();
    assert_eq!(set.sites.len(), 2);
    assert_eq!(
        set.sites[0].value("time_zone"),
        Some(&Value::Text("Europe/Copenhagen".into()))
    );
    let e = errors(
        &[(
            "sites.csv",
            "site_id,time_zone\nfarm-a,CEST\nfarm-b,Europe/Nowhere\n",
        )],
        None,
    );
    has(
        &e,
        &[
            "sites.csv line 2",
            "column time_zone",
            "\"CEST\" is not an IANA time zone",
        ],
    );
    has(&e, &["sites.csv line 3", "Europe/Nowhere"]);
}

#[test]
fn models_table_is_told_by_its_header() {
    let set = parse_texts(
        &[(
            "models.csv",
            "model_id,manufacturer,rated_power_kw,cut_in,rated_wind_speed_ms,cut_out,rotor_diameter_m,hub_height_m\n\
             GX2000-90,Gale Wind,2000,3,12,25,90,80\n",
        )],
        None,
    )
    .unwrap();
    assert_eq!(set.models.len(), 1);
    assert_eq!(
        set.models[0].value("cut_out_wind_speed_ms"),
        Some(&Value::Number(25.0))
    );
}

#[test]
fn header_problems_name_the_column_and_the_way_out() {
    let e = errors(&[("x.csv", "name,colour\nfoo,red\n")], None);
    has(&e, &["x.csv line 1", "cannot tell which table", "--table"]);
    let e = errors(&[("x.csv", "asset_id,colour\nT1,red\n")], None);
    has(
        &e,
        &[
            "column colour",
            "not a column of the assets table",
            "accepted: asset_id, kind",
        ],
    );
    let e = errors(&[("x.csv", "asset_id,site,site_id\nT1,a,b\n")], None);
    has(
        &e,
        &["column site_id", "means site_id too, like column site"],
    );
    let e = errors(
        &[("x.csv", "model,power_kw\nGX,20\n")],
        Some(TableKind::Curves),
    );
    has(&e, &["has no wind_speed_ms column"]);
    let e = errors(&[("x.csv", "")], None);
    has(&e, &["x.csv: is empty"]);
}

#[test]
fn forced_table_reads_a_header_that_would_tell_another() {
    let set = parse_texts(
        &[("s.csv", "site,tz\nfarm-a,UTC\n")],
        Some(TableKind::Sites),
    )
    .unwrap();
    assert_eq!(set.sites.len(), 1);
    let e = errors(
        &[("a.csv", "asset_id,kind\nT1,turbine\n")],
        Some(TableKind::Sites),
    );
    has(&e, &["column asset_id", "not a column of the sites table"]);
}

#[test]
fn unnamed_empty_columns_are_ignored_but_their_values_are_not() {
    let set = parse_texts(&[("a.csv", "asset_id,kind,\nT1,turbine,\n")], None).unwrap();
    assert_eq!(set.assets.len(), 1);
    let e = errors(&[("a.csv", "asset_id,kind,\nT1,turbine,x\n")], None);
    has(
        &e,
        &["a.csv line 2", "\"x\" is under a column with no name"],
    );
}

#[test]
fn meter_fields_make_a_meter_and_both_make_nothing() {
    let set = parse_texts(
        &[(
            "m.csv",
            "asset_id,feeder_id,contracted_capacity_kw,vacant,model\nM1,F-7,12,true,\nX,F-7,,,GX\nM2,,,,\n",
        )],
        None,
    )
    .unwrap();
    let kind = |i: usize| set.assets[i].defaults.first().map(|(_, v)| v.clone());
    assert_eq!(kind(0), Some(Value::Kind(AssetKind::Meter)));
    assert_eq!(kind(1), None);
    assert_eq!(kind(2), None);
}

#[test]
fn json_documents_hold_every_table() {
    let json = r#"{
        "sites": [{"site_id": "farm-a", "time_zone": "Europe/Berlin", "lat": 54.1, "lon": 7.9}],
        "models": [
            {"model_id": "GX", "rated_power_kw": 2000, "cut_in": 3, "rated_wind_speed_ms": 12,
             "cut_out": 25, "curve": [[3, 20], [12, 1980], [25, 2000]]},
            {"model": "GY", "curve": [{"wind_speed_ms": 3, "power_kw": 10}, {"ws": 4, "power": 40}]}
        ],
        "assets": [
            {"asset_id": "T1", "site_id": "farm-a", "model_id": "GX", "commissioned_on": "2019-05-01"},
            {"asset_id": "M1", "kind": "meter", "vacant": true, "feeder_id": null},
            {"asset_id": 17, "kind": "meter"}
        ]
    }"#;
    let set = parse_texts(&[("fleet.json", json)], None).unwrap();
    assert_eq!(set.sites.len(), 1);
    assert_eq!(set.models.len(), 2);
    assert_eq!(set.curves.len(), 2);
    assert_eq!(set.curves[0].points.len(), 3);
    assert_eq!(set.curves[1].points[1].power_kw, 40.0);
    assert_eq!(set.assets.len(), 3);
    assert_eq!(set.assets[2].key, "17");
    assert_eq!(set.assets[1].value("feeder_id"), Some(&Value::Null));
    assert_eq!(set.assets[1].value("vacant"), Some(&Value::Bool(true)));
    assert_eq!(
        set.curves[0].origin.to_string(),
        "fleet.json models[0].curve"
    );
}

#[test]
fn json_errors_name_the_element() {
    let json = r#"{
        "models": [{"model_id": "GX", "curve": [[3, 20], [2, 10], [4, -5], "x"]}],
        "assets": [{"asset_id": "T1", "rated_power_w": 2000000}, {"asset_id": "T2", "lat": "north"}, 5],
        "things": []
    }"#;
    let e = errors(&[("fleet.json", json)], None);
    has(&e, &["fleet.json models[0].curve[1]", "not increasing"]);
    has(
        &e,
        &[
            "fleet.json models[0].curve[2]",
            "field power_kw",
            "negative",
        ],
    );
    has(
        &e,
        &[
            "fleet.json models[0].curve[3]",
            "expected [wind_speed_ms, power_kw]",
        ],
    );
    has(
        &e,
        &[
            "fleet.json assets[0], field rated_power_w",
            "in W is not accepted",
        ],
    );
    has(&e, &["fleet.json assets[1], field lat", "latitude"]);
    has(&e, &["fleet.json assets[2]", "expected an object"]);
    has(&e, &["fleet.json things", "unknown section"]);
    let e = errors(
        &[(
            "bad.json",
            "{\n  \"assets\": [\n    {\"asset_id\": }\n  ]\n}",
        )],
        None,
    );
    has(&e, &["bad.json line 3", "not valid JSON"]);
}

#[test]
fn a_json_array_is_one_table() {
    let set = parse_texts(
        &[(
            "a.json",
            r#"[{"asset_id": "T1", "kind": "turbine"}, {"asset_id": "M1", "kind": "METER"}]"#,
        )],
        None,
    )
    .unwrap();
    assert_eq!(set.assets.len(), 2);
    let e = errors(&[("a.json", r#"[{"colour": "red"}]"#)], None);
    has(&e, &["a.json", "cannot tell which table"]);
    let e = errors(&[("a.json", r#"{"assets": []}"#)], Some(TableKind::Assets));
    has(&e, &["--table assets applies to CSV files and JSON arrays"]);
}

#[test]
fn files_are_read_from_disk_with_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("turbines.csv");
    std::fs::write(&a, "asset_id,kind\nT1,turbine\n").unwrap();
    let set = parse(&a).unwrap();
    assert_eq!(set.assets[0].origin.file, a.display().to_string());
    let missing = dir.path().join("missing.csv");
    let latin1 = dir.path().join("latin1.csv");
    std::fs::write(&latin1, b"asset_id,kind\nT\xe9,turbine\n").unwrap();
    let e: Vec<String> = parse_files(&[missing, latin1], None)
        .unwrap_err()
        .errors
        .iter()
        .map(ToString::to_string)
        .collect();
    has(&e, &["missing.csv: cannot read"]);
    has(&e, &["latin1.csv: is not UTF-8"]);
}

#[test]
fn table_names_parse() {
    assert_eq!("curves".parse::<TableKind>(), Ok(TableKind::Curves));
    assert_eq!("Power Curves".parse::<TableKind>(), Ok(TableKind::Curves));
    assert_eq!("gale_assets".parse::<TableKind>(), Ok(TableKind::Assets));
    assert!("things"
        .parse::<TableKind>()
        .unwrap_err()
        .contains("sites, models"));
}
