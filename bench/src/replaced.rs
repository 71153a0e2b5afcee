//! What the replaced system's text searches cost on our data sets: its statements as
//! ../shared/reference/original-api.md records them (`@@ to_tsquery(q)` over the raw column,
//! no index serving it, no ORDER BY; a count and a page), sent bare. The Python around them is
//! not measured, so these are floors of its times: a ratio against them is in its favour.

use crate::dataset::DataSet;

/// The broad and selective one-word searches of each data set (`patients` measures ours).
const SHAPES: &[(DataSet, &str, &str, i64)] = &[
    (DataSet::Uniform, "medical_history", "hypertension", 100),
    (DataSet::Uniform, "medical_history", "sarcoidosis", 100),
    (DataSet::Uniform, "name", "maria", 100),
    (DataSet::Uniform, "name", "jo", 100),
    (DataSet::Correlated, "medical_history", "asthma", 100),
    (DataSet::Correlated, "medical_history", "tinnitus", 20),
    (DataSet::Correlated, "medical_history", "gout", 20),
    (DataSet::Correlated, "name", "Hiroshi", 100),
    (DataSet::Skewed, "medical_history", "hypertension", 100),
    (DataSet::Skewed, "medical_history", "asthma", 20),
    (DataSet::Skewed, "medical_history", "porphyria", 100),
    (DataSet::Skewed, "name", "James", 100),
];

pub async fn replaced_system() {
    println!("## The replaced system's text searches on the same data (bare SQL, median of 3)\n");
    println!("| data set | search | limit | count + page ms |\n|---|---|---|---|");
    for set in [DataSet::Uniform, DataSet::Correlated, DataSet::Skewed] {
        let data = crate::BenchData::open(set).await;
        for (_, column, word, limit) in SHAPES.iter().filter(|(s, ..)| *s == set) {
            let filter = format!("to_tsvector({column}) @@ to_tsquery($1)");
            let count = format!("SELECT count(*) FROM patients WHERE {filter}");
            let page = format!("SELECT * FROM patients WHERE {filter} OFFSET 0 LIMIT $2");
            let stats = crate::time(3, || async {
                data.client.query_one(&count, &[word]).await.unwrap();
                data.client.query(&page, &[word, limit]).await.unwrap();
            })
            .await;
            let parameter = if *column == "name" {
                "name_text"
            } else {
                "history_text"
            };
            println!(
                "| {set:?} | `{parameter}={word}` | {limit} | {} |",
                crate::ms(stats.p50)
            );
        }
    }
    println!();
}
