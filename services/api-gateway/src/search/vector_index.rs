//! The HNSW index of one model's vectors and the SQL that names it.
//!
//! `session_chunks.embedding` has no fixed dimension (each row names its
//! model), so each model gets a partial index over its rows cast to its
//! dimension; a query uses it by ordering on the very same expression and
//! filtering on the same model. Built here, not in a migration, so a new
//! provider needs no schema change: the gateway makes its index at start.

use sqlx::PgPool;
use stratavore_store::StoreError;

/// One model's vectors: their name and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorIndex {
    model: String,
    dimensions: usize,
}

impl VectorIndex {
    /// The index of `model`'s vectors of `dimensions` floats.
    pub fn new(model: &str, dimensions: usize) -> Self {
        Self {
            model: model.to_owned(),
            dimensions,
        }
    }

    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The index's name: the model's letters and digits, lower-cased,
    /// others as `_` (`session_chunks_hnsw_all_minilm_l6_v2`).
    pub fn name(&self) -> String {
        let slug: String = self
            .model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        // Postgres keeps 63 bytes of a name; distinct long names stay
        // distinct through a hash of the whole model name.
        let name = format!("session_chunks_hnsw_{slug}");
        if name.len() <= 63 {
            name
        } else {
            let hash = self
                .model
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |acc, b| {
                    (acc ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            format!("{}_{hash:016x}", &name[..46])
        }
    }

    /// The indexed expression; a query must order by exactly this.
    pub fn column(&self) -> String {
        format!("(embedding::vector({}))", self.dimensions)
    }

    /// The model as an SQL string literal (the partial index's predicate
    /// cannot take a parameter).
    fn model_literal(&self) -> String {
        format!("'{}'", self.model.replace('\'', "''"))
    }

    /// `CREATE INDEX IF NOT EXISTS` for this model.
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON session_chunks USING hnsw ({} vector_cosine_ops) \
             WHERE model = {}",
            self.name(),
            self.column(),
            self.model_literal()
        )
    }

    /// Make the index unless it exists. Two gateways starting at once take
    /// turns on an advisory lock, so neither trips on the other's catalog
    /// entry.
    pub async fn ensure(&self, pool: &PgPool) -> Result<(), StoreError> {
        let mut tx = pool
            .begin()
            .await
            .map_err(StoreError::new("starting the vector index's transaction"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('gateway.session_chunks_hnsw'))")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::new("locking the vector index"))?;
        sqlx::query(sqlx::AssertSqlSafe(self.create_sql()))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::new("creating the vector index"))?;
        tx.commit()
            .await
            .map_err(StoreError::new("committing the vector index"))
    }
}

/// A vector as pgvector's text form, `[0.1,-0.2,…]` (bound as text and cast,
/// so no client type is needed; `{}` prints the shortest exact f32).
pub fn vector_literal(vector: &[f32]) -> String {
    let mut out = String::with_capacity(vector.len() * 12 + 2);
    out.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&x.to_string());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_named_after_the_model_and_cast_to_its_dimension() {
        let index = VectorIndex::new("all-MiniLM-L6-v2", 384);
        assert_eq!(index.name(), "session_chunks_hnsw_all_minilm_l6_v2");
        assert_eq!(index.column(), "(embedding::vector(384))");
        assert_eq!(
            index.create_sql(),
            "CREATE INDEX IF NOT EXISTS session_chunks_hnsw_all_minilm_l6_v2 ON session_chunks \
             USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE model = 'all-MiniLM-L6-v2'"
        );
    }

    #[test]
    fn odd_model_names_stay_one_safe_literal_and_a_short_distinct_name() {
        let a = VectorIndex::new(&format!("{}'; DROP TABLE x; --", "m".repeat(60)), 8);
        let b = VectorIndex::new(&format!("{}other", "m".repeat(60)), 8);
        let expected = format!("WHERE model = '{}''; DROP TABLE x; --'", "m".repeat(60));
        assert!(a.create_sql().ends_with(&expected), "{}", a.create_sql());
        assert!(a.name().len() <= 63 && b.name().len() <= 63);
        assert_ne!(a.name(), b.name());
        assert!(
            a.name()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
    }

    #[test]
    fn vectors_print_as_pgvector_text() {
        assert_eq!(vector_literal(&[0.5, -0.25, 1.0]), "[0.5,-0.25,1]");
        assert_eq!(vector_literal(&[]), "[]");
    }
}
