//! The search query: sessions ranked by their best chunk, fusing the
//! vector ranking (cosine distance through the model's HNSW index) with
//! the full-text ranking (`ts_rank_cd` through the GIN index) by reciprocal
//! rank fusion, in one SQL statement.
//!
//! A project filter is applied inside the index scans; pgvector's
//! iterative scan keeps reading the HNSW graph until the filtered scan
//! has its rows, so a small project still gets `limit` hits.

use super::{Search, VectorIndex, vector_literal};
use serde::Serialize;
use sqlx::{PgPool, Row};
use stratavore_store::StoreError;

/// What a search asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// The words.
    pub q: String,
    /// Only this project's sessions.
    pub project: Option<String>,
    /// How many sessions.
    pub limit: u32,
}

/// A session found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    /// The agent's session id.
    pub session_id: String,
    /// Its project.
    pub project: Option<String>,
    /// Reciprocal rank fusion of its best chunk: the sum over the rankings
    /// it is in of 1 / (k + rank).
    pub score: f64,
    /// Its best chunk's rank by meaning, if in that ranking.
    pub vector_rank: Option<i64>,
    /// Its best chunk's rank by words, if in that ranking.
    pub text_rank: Option<i64>,
    /// Where the chunk came from: `prompt`, `user`, `assistant`, `result`.
    pub role: String,
    /// The chunk, the matching words marked when words matched.
    pub snippet: String,
    /// When the chunk's text was said.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// How many chunks each ranking contributes: enough that sessions with
/// many similar chunks still leave `limit` distinct sessions.
pub fn candidates(limit: u32) -> i64 {
    i64::from(limit).saturating_mul(10).clamp(40, 1000)
}

/// The statement. `$1` the query vector, `$2` the words, `$3` the model,
/// `$4` the project or NULL, `$5` the candidates per ranking, `$6` the
/// fusion's k, `$7` the sessions to return.
pub fn search_sql(index: &VectorIndex) -> String {
    let column = index.column();
    // OR of the words (stemmed, stop words dropped): a chunk with some of
    // them still ranks, the more and the closer the better.
    let words = "replace(plainto_tsquery('english', $2)::text, ' & ', ' | ')::tsquery";
    format!(
        "WITH vec AS MATERIALIZED (
             SELECT text_id, seq, {column} <=> $1::text::vector AS distance
             FROM session_chunks
             WHERE model = $3 AND ($4::text IS NULL OR project = $4)
             ORDER BY {column} <=> $1::text::vector
             LIMIT $5),
         txt AS MATERIALIZED (
             SELECT text_id, seq, ts_rank_cd(tsv, {words}) AS rank
             FROM session_chunks
             WHERE tsv @@ {words} AND model = $3 AND ($4::text IS NULL OR project = $4)
             ORDER BY rank DESC
             LIMIT $5),
         ranked AS (
             SELECT text_id, seq, row_number() OVER (ORDER BY distance, text_id, seq) AS vr,
                    NULL::bigint AS tr FROM vec
             UNION ALL
             SELECT text_id, seq, NULL, row_number() OVER (ORDER BY rank DESC, text_id, seq)
             FROM txt),
         fused AS (
             SELECT text_id, seq, min(vr) AS vector_rank, min(tr) AS text_rank,
                    sum(1.0 / ($6 + coalesce(vr, tr)))::float8 AS score
             FROM ranked GROUP BY text_id, seq),
         best AS (
             SELECT DISTINCT ON (c.session_id) c.session_id, c.project, c.role, c.body, c.at,
                    f.score, f.vector_rank, f.text_rank
             FROM fused f
             JOIN session_chunks c ON c.text_id = f.text_id AND c.seq = f.seq AND c.model = $3
             ORDER BY c.session_id, f.score DESC, c.at DESC)
         SELECT session_id, project, role, score, vector_rank, text_rank, at,
                CASE WHEN text_rank IS NULL THEN left(body, 300)
                     ELSE ts_headline('english', body, {words},
                                      'MaxWords=35, MinWords=12, MaxFragments=2')
                END AS snippet
         FROM best
         ORDER BY score DESC, session_id
         LIMIT $7"
    )
}

/// The scan settings of a search's transaction: iterative index scans
/// (pgvector 0.8) so a filter cannot starve the vector ranking.
pub const SCAN_SETTINGS: &[&str] = &[
    "SET LOCAL hnsw.iterative_scan = relaxed_order",
    "SET LOCAL hnsw.ef_search = 100",
];

/// Run a search with `vector`, the query's embedding by `search`'s model.
pub async fn run(
    pool: &PgPool,
    search: &Search,
    request: &SearchRequest,
    vector: &[f32],
) -> Result<Vec<Hit>, StoreError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(StoreError::new("starting a search"))?;
    for setting in SCAN_SETTINGS {
        sqlx::query(*setting)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::new("setting up a search"))?;
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(search_sql(search.index())))
        .bind(vector_literal(vector))
        .bind(&request.q)
        .bind(search.model())
        .bind(request.project.as_deref())
        .bind(candidates(request.limit))
        .bind(i64::from(search.rrf_k()))
        .bind(i64::from(request.limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::new("searching sessions"))?;
    tx.commit()
        .await
        .map_err(StoreError::new("ending a search"))?;
    Ok(rows
        .into_iter()
        .map(|r| Hit {
            session_id: r.get(0),
            project: r.get(1),
            role: r.get(2),
            score: r.get(3),
            vector_rank: r.get(4),
            text_rank: r.get(5),
            at: r.get(6),
            snippet: r.get(7),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ranking_offers_ten_chunks_per_session_asked_within_bounds() {
        assert_eq!(candidates(1), 40);
        assert_eq!(candidates(10), 100);
        assert_eq!(candidates(100), 1000);
        assert_eq!(candidates(u32::MAX), 1000);
    }

    #[test]
    fn the_vector_ranking_orders_by_the_indexed_expression() {
        let index = VectorIndex::new("all-MiniLM-L6-v2", 384);
        let sql = search_sql(&index);
        assert!(sql.contains("ORDER BY (embedding::vector(384)) <=> $1::text::vector"));
        assert!(sql.contains("WHERE model = $3"));
    }
}
