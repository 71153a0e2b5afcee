//! Patient search: FHIR's search semantics (`name`, `name:exact`, `birthdate`, `_id`,
//! `_lastUpdated`, commas and repeats) over the JSON API's index. Paging is in `paging`,
//! `identifier` in `identifiers`.

use api_tests::TestApp;
use serde_json::json;

use super::{ids, outcome, patient, patients, search, walk_both_ways};

/// Four patients whose names and birth dates tell the search semantics apart.
struct Four {
    app: TestApp,
    token: String,
    anna: String,
    annabel: String,
    bob: String,
    nodob: String,
}

impl Four {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let t = app.clinician().await.token;
        let anna = patient(
            &app,
            &t,
            json!({"name": "Anna Smith-Jones", "dob": "1980-02-29"}),
        )
        .await;
        let annabel = patient(
            &app,
            &t,
            json!({"name": "Annabel Lee", "dob": "1981-06-01"}),
        )
        .await;
        let bob = patient(
            &app,
            &t,
            json!({"name": "Bob O'Brien", "dob": "1979-12-31"}),
        )
        .await;
        let nodob = patient(&app, &t, json!({"name": "Ann Nodate"})).await;
        Self {
            app,
            token: t,
            anna,
            annabel,
            bob,
            nodob,
        }
    }

    /// The ids a search finds, sorted.
    async fn found(&self, query: &[(&str, &str)]) -> Vec<String> {
        let response = self.app.call(search(&self.token, query)).await;
        assert_eq!(response.status, 200, "{query:?}: {}", response.body);
        let mut got = ids(&response.json());
        got.sort();
        got
    }
}

fn sorted(mut v: Vec<&String>) -> Vec<String> {
    v.sort();
    v.into_iter().cloned().collect()
}

#[tokio::test]
async fn each_name_word_starts_a_word_of_the_name_ignoring_case_and_accents() {
    let p = Four::new().await;
    // Each word starts a word of the name, accents and case aside; repeated is AND.
    assert_eq!(
        p.found(&[("name", "ann")]).await,
        sorted(vec![&p.anna, &p.annabel, &p.nodob])
    );
    assert_eq!(p.found(&[("name", "SMITH-jo")]).await, vec![p.anna.clone()]);
    assert_eq!(p.found(&[("name", "obrien")]).await, vec![p.bob.clone()]);
}

#[tokio::test]
async fn repeated_names_must_all_match() {
    let p = Four::new().await;
    assert_eq!(
        p.found(&[("name", "ann"), ("name", "lee")]).await,
        vec![p.annabel.clone()]
    );
}

#[tokio::test]
async fn name_exact_is_the_whole_name_as_written() {
    let p = Four::new().await;
    assert_eq!(
        p.found(&[("name:exact", "Annabel Lee")]).await,
        vec![p.annabel.clone()]
    );
    assert_eq!(
        p.found(&[("name:exact", "annabel lee")]).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_partial_birth_date_matches_its_whole_period() {
    let p = Four::new().await;
    assert_eq!(
        p.found(&[("birthdate", "1980")]).await,
        vec![p.anna.clone()]
    );
    assert_eq!(
        p.found(&[("birthdate", "1980-02")]).await,
        vec![p.anna.clone()]
    );
    assert_eq!(
        p.found(&[("birthdate", "eq1980-02-29")]).await,
        vec![p.anna.clone()]
    );
}

#[tokio::test]
async fn birth_date_prefixes_compare_and_no_birth_date_matches_no_date() {
    let p = Four::new().await;
    assert_eq!(
        p.found(&[("birthdate", "ge1980")]).await,
        sorted(vec![&p.anna, &p.annabel])
    );
    assert_eq!(
        p.found(&[("birthdate", "gt1980")]).await,
        vec![p.annabel.clone()]
    );
    assert_eq!(
        p.found(&[("birthdate", "lt1980")]).await,
        vec![p.bob.clone()]
    );
    assert_eq!(
        p.found(&[("birthdate", "le1980-02-29")]).await,
        sorted(vec![&p.anna, &p.bob])
    );
    assert_eq!(
        p.found(&[("birthdate", "ne1980")]).await,
        sorted(vec![&p.annabel, &p.bob])
    );
}

#[tokio::test]
async fn repeated_birth_dates_must_all_match() {
    let p = Four::new().await;
    assert_eq!(
        p.found(&[("birthdate", "ge1979-12-31"), ("birthdate", "lt1981")])
            .await,
        sorted(vec![&p.anna, &p.bob])
    );
}

#[tokio::test]
async fn id_takes_several_and_lenient_handling_ignores_unknown_parameters() {
    let p = Four::new().await;
    // _id takes several (any of them); with lenient handling, unknown parameters are ignored.
    let ids_query = format!("{},{},not-a-uuid", p.anna, p.bob);
    let response = p
        .app
        .call(
            search(&p.token, &[("_id", &ids_query), ("colour", "blue")])
                .header("prefer", "handling=lenient"),
        )
        .await;
    let mut got = ids(&response.json());
    got.sort();
    assert_eq!(got, sorted(vec![&p.anna, &p.bob]));
}

#[tokio::test]
async fn unknown_parameters_are_refused_by_default_and_with_strict_handling() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    for request in [
        search(&t, &[("colour", "blue")]),
        search(&t, &[("colour", "blue")]).header("prefer", "handling=strict"),
    ] {
        let strict = app.call(request).await;
        outcome(&strict, 400, "invalid");
        assert!(strict.body.contains("colour"));
    }
}

/// Seven patients, born 1930, 1940 ... 1990, created in that order.
async fn walkers(app: &TestApp, t: &str) -> Vec<String> {
    patients(
        app,
        t,
        (0..7).map(
            |i| json!({"name": format!("Walk Back {i}"), "dob": format!("19{}0-06-15", 3 + i)}),
        ),
    )
    .await
}

#[tokio::test]
async fn commas_in_a_name_are_any_of_the_values() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let made = walkers(&app, &t).await;
    // Commas: any of the values; repeated: all of them.
    let names = app
        .call(search(
            &t,
            &[("name", "back 1,back 5"), ("_sort", "birthdate")],
        ))
        .await
        .json();
    assert_eq!(ids(&names), [made[1].clone(), made[5].clone()]);
}

#[tokio::test]
async fn commas_in_a_date_are_or_and_repeats_are_and() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let made = walkers(&app, &t).await;
    let dates = app
        .call(search(
            &t,
            &[
                ("birthdate", "1930,ge1980"),
                ("birthdate", "lt1990"),
                ("_sort", "birthdate"),
            ],
        ))
        .await
        .json();
    assert_eq!(ids(&dates), [made[0].clone(), made[5].clone()]);
}

#[tokio::test]
async fn more_than_32_values_are_400() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let too_many = vec!["x"; 33].join(",");
    outcome(
        &app.call(search(&t, &[("name", &too_many)])).await,
        400,
        "invalid",
    );
}

/// Two patients, the first last updated on 2020-05-01 at 10:00 UTC: (app, token, old, newer).
async fn old_and_newer() -> (TestApp, String, String, String) {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let old = patient(&app, &t, json!({"name": "Lu Old"})).await;
    let newer = patient(&app, &t, json!({"name": "Lu Newer"})).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE patients SET updated_at = '2020-05-01T10:00:00Z' WHERE id = $1",
            &[&uuid::Uuid::parse_str(&old).unwrap()],
        )
        .await
        .unwrap();
    (app, t, old, newer)
}

#[tokio::test]
async fn last_updated_filters_by_period_and_prefix() {
    let (app, t, old, newer) = old_and_newer().await;
    for (value, expected) in [
        ("2020-05-01", vec![old.clone()]),
        ("gt2020-05-01T10:00:00Z", vec![newer.clone()]),
        (
            "ge2020-05-01T12:00:00+02:00",
            vec![old.clone(), newer.clone()],
        ),
        ("lt2020-05-01T10:00:00Z", vec![]),
        ("le2020-05-01T10:00:00Z", vec![old.clone()]),
        ("ne2020-05", vec![newer.clone()]),
    ] {
        let found = app
            .call(search(
                &t,
                &[("_lastUpdated", value), ("_sort", "_lastUpdated")],
            ))
            .await
            .json();
        assert_eq!(ids(&found), expected, "_lastUpdated={value}");
    }
}

#[tokio::test]
async fn last_updated_sorts_newest_first_to_the_millisecond() {
    let (app, t, old, newer) = old_and_newer().await;
    let newest_first = app
        .call(search(&t, &[("_sort", "-_lastUpdated")]))
        .await
        .json();
    assert_eq!(ids(&newest_first), [newer.clone(), old.clone()]);
    assert_eq!(
        newest_first["entry"][1]["resource"]["meta"]["lastUpdated"],
        "2020-05-01T10:00:00.000Z"
    );
}

#[tokio::test]
async fn a_last_updated_without_offset_or_not_a_date_is_400() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    for bad in ["2020-05-01T10:00:00", "yesterday", "ap2020"] {
        outcome(
            &app.call(search(&t, &[("_lastUpdated", bad)])).await,
            400,
            "invalid",
        );
    }
}

#[tokio::test]
async fn sorting_by_several_keys_is_400() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    outcome(
        &app.call(search(&t, &[("_sort", "name,birthdate")])).await,
        400,
        "invalid",
    );
}

#[tokio::test]
async fn a_one_word_name_pages_both_ways_in_name_order_counting_each_patient_once() {
    // One word under the default sort: the JSON API's terms table serves FHIR too.
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let names = [
        "Jo Johnson",
        "Joan Smith",
        "Amy Jones-Jordan",
        "Bo Jolly",
        "Jon Jo",
        "Zed Other",
    ];
    let id = patients(&app, &t, names.iter().map(|n| json!({"name": n}))).await;
    let first = app
        .call(search(&t, &[("name", "jo"), ("_total", "accurate")]))
        .await
        .json();
    assert_eq!(first["total"], 5, "{first}");
    let pages = walk_both_ways(&app, &t, search(&t, &[("name", "jo"), ("_count", "2")])).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages.concat(),
        [&id[2], &id[3], &id[0], &id[1], &id[4]].map(String::clone)
    );
}
