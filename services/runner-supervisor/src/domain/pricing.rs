//! What tokens cost: a price table per model, so a turn's cost is known
//! while the run goes on (Claude Code prints its own figure only in the
//! final `result`, and a crashed run never prints one).
//!
//! Models are matched by the longest configured prefix, since the CLI names
//! dated and suffixed variants (`claude-sonnet-4-5-20250929`,
//! `claude-opus-4-8[1m]`) that share one price. A model no prefix matches is
//! priced with the `default` row and the figure is flagged as estimated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stratavore_agent_protocols::TokenUsage;

/// Prices are quoted per this many tokens.
const TOKENS_PER_QUOTE: f64 = 1_000_000.0;

/// A price could not be accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    /// A rate was negative, NaN or infinite: every cost it touched would be
    /// meaningless, and budgets would stop at the wrong moment.
    #[error("a price must be a finite number of USD at or above zero, not {0}")]
    InvalidRate(f64),
}

/// USD per million tokens, finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct UsdPerMillion(f64);

impl UsdPerMillion {
    /// A rate, refused when it is negative or not finite.
    pub fn new(usd: f64) -> Result<Self, PricingError> {
        if usd.is_finite() && usd >= 0.0 {
            Ok(Self(usd))
        } else {
            Err(PricingError::InvalidRate(usd))
        }
    }

    /// The rate in USD per million tokens.
    #[must_use]
    pub fn usd(self) -> f64 {
        self.0
    }

    /// For the built-in rows only, whose literals are known to be valid.
    const fn builtin(usd: f64) -> Self {
        Self(usd)
    }
}

impl TryFrom<f64> for UsdPerMillion {
    type Error = PricingError;

    fn try_from(usd: f64) -> Result<Self, Self::Error> {
        Self::new(usd)
    }
}

impl From<UsdPerMillion> for f64 {
    fn from(rate: UsdPerMillion) -> Self {
        rate.0
    }
}

/// The four rates of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input tokens.
    pub input: UsdPerMillion,
    /// Output tokens.
    pub output: UsdPerMillion,
    /// Input tokens written to the prompt cache.
    pub cache_write: UsdPerMillion,
    /// Input tokens read from the prompt cache.
    pub cache_read: UsdPerMillion,
}

impl ModelPrice {
    const fn builtin(input: f64, output: f64, cache_write: f64, cache_read: f64) -> Self {
        Self {
            input: UsdPerMillion::builtin(input),
            output: UsdPerMillion::builtin(output),
            cache_write: UsdPerMillion::builtin(cache_write),
            cache_read: UsdPerMillion::builtin(cache_read),
        }
    }

    /// What `usage` costs at these rates, in USD.
    #[must_use]
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        // Summed in USD per million first and divided once, so the figure
        // matches the agent's own to the last cent fraction it prints.
        let per_million = tokens(usage.input_tokens) * self.input.usd()
            + tokens(usage.output_tokens) * self.output.usd()
            + tokens(usage.cache_creation_input_tokens) * self.cache_write.usd()
            + tokens(usage.cache_read_input_tokens) * self.cache_read.usd();
        per_million / TOKENS_PER_QUOTE
    }
}

/// Counters far beyond 2^53 only come from corrupt lines; the rounding of
/// such a count changes nothing that matters.
fn tokens(count: u64) -> f64 {
    count as f64
}

/// Opus 4 list prices.
const CLAUDE_OPUS_4: ModelPrice = ModelPrice::builtin(15.0, 75.0, 18.75, 1.5);
/// Sonnet 4 list prices.
const CLAUDE_SONNET_4: ModelPrice = ModelPrice::builtin(3.0, 15.0, 3.75, 0.3);
/// Haiku 4 list prices.
const CLAUDE_HAIKU_4: ModelPrice = ModelPrice::builtin(1.0, 5.0, 1.25, 0.1);

/// GPT-5 list prices (Codex's models); OpenAI bills no cache writes, so
/// they cost what plain input does.
const GPT_5: ModelPrice = ModelPrice::builtin(1.25, 10.0, 1.25, 0.125);
/// GPT-5 mini list prices.
const GPT_5_MINI: ModelPrice = ModelPrice::builtin(0.25, 2.0, 0.25, 0.025);

/// A cost and whether it is only an estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// The cost in USD.
    pub cost_usd: f64,
    /// True when the model matched no row and the `default` row priced it.
    pub estimated: bool,
}

/// Prices per model prefix, and the row for every other model.
///
/// As config (`[pricing]`), every part optional:
/// `models = { "claude-opus-4" = { input = 15, output = 75, cache_write = 18.75, cache_read = 1.5 } }`
/// and `default = { ... }`. Given `models` replace the built-in rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriceTable {
    /// Rows by model-name prefix; the longest matching prefix wins, so a
    /// specific variant can be priced apart from its family.
    pub models: BTreeMap<String, ModelPrice>,
    /// The row for a model no prefix matches, or for no model at all.
    pub default: ModelPrice,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            models: BTreeMap::from([
                ("claude-opus-4".to_owned(), CLAUDE_OPUS_4),
                ("claude-sonnet-4".to_owned(), CLAUDE_SONNET_4),
                ("claude-haiku-4".to_owned(), CLAUDE_HAIKU_4),
                ("gpt-5".to_owned(), GPT_5),
                ("gpt-5-mini".to_owned(), GPT_5_MINI),
            ]),
            // The dearest known row: an unknown model's budget should run
            // out early rather than late.
            default: CLAUDE_OPUS_4,
        }
    }
}

impl PriceTable {
    /// The cost of `usage` on `model`, in USD.
    #[must_use]
    pub fn price(&self, model: Option<&str>, usage: &TokenUsage) -> f64 {
        self.quote(model, usage).cost_usd
    }

    /// The cost of `usage` on `model`, and whether the `default` row gave it.
    #[must_use]
    pub fn quote(&self, model: Option<&str>, usage: &TokenUsage) -> Quote {
        let row = model.and_then(|name| self.row_for(name));
        Quote {
            cost_usd: row.unwrap_or(&self.default).cost(usage),
            // Zero tokens cost zero at any price: nothing to doubt (the
            // CLI's `<synthetic>` error messages are such turns).
            estimated: row.is_none() && !usage.is_zero(),
        }
    }

    /// The row of the longest prefix of `model`, if any; a model named with
    /// its provider (`anthropic/claude-sonnet-4-5`, as OpenCode names them)
    /// is looked up by its own name when the whole name matches nothing.
    fn row_for(&self, model: &str) -> Option<&ModelPrice> {
        self.row_for_name(model).or_else(|| {
            model
                .rsplit_once('/')
                .and_then(|(_, name)| self.row_for_name(name))
        })
    }

    fn row_for_name(&self, model: &str) -> Option<&ModelPrice> {
        self.models
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, price)| price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cache_write: u64, cache_read: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: cache_write,
            cache_read_input_tokens: cache_read,
        }
    }

    fn assert_usd(actual: f64, expected: f64) {
        // Far below a millionth of a cent: the figures are exact in every
        // digit they are written with.
        assert!(
            (actual - expected).abs() < 1e-12,
            "{actual} != {expected} USD"
        );
    }

    #[test]
    fn a_million_tokens_of_each_kind_cost_the_list_price_of_each_family() {
        let table = PriceTable::default();
        let million = 1_000_000;
        for (model, rates) in [
            ("claude-opus-4-1-20250805", [15.0, 75.0, 18.75, 1.5]),
            ("claude-sonnet-4-5-20250929", [3.0, 15.0, 3.75, 0.3]),
            ("claude-haiku-4-5", [1.0, 5.0, 1.25, 0.1]),
        ] {
            let each = [
                usage(million, 0, 0, 0),
                usage(0, million, 0, 0),
                usage(0, 0, million, 0),
                usage(0, 0, 0, million),
            ];
            for (u, rate) in each.iter().zip(rates) {
                assert_usd(table.price(Some(model), u), rate);
            }
        }
    }

    #[test]
    fn sonnet_turns_are_priced_to_the_agents_own_figure() {
        let table = PriceTable::default();
        let model = Some("claude-sonnet-4-5-20250929");
        // The two turns of the two-turn fixture; their sum is the
        // `total_cost_usd` 0.02981745 that Claude Code prints.
        let first = table.price(model, &usage(3, 87, 4811, 12044));
        let second = table.price(model, &usage(5, 41, 310, 16855));
        assert_usd(first, 0.022_968_45);
        assert_usd(second, 0.006_849);
        assert_usd(first + second, 0.029_817_45);
    }

    #[test]
    fn opus_with_a_context_suffix_is_priced_as_opus_and_not_estimated() {
        let quote =
            PriceTable::default().quote(Some("claude-opus-4-8[1m]"), &usage(1000, 100, 0, 0));
        assert_usd(quote.cost_usd, 0.0225);
        assert!(!quote.estimated);
    }

    #[test]
    fn an_unknown_or_missing_model_is_priced_by_the_default_row_as_an_estimate() {
        let table = PriceTable::default();
        let u = usage(1000, 100, 0, 0);
        for model in [Some("o3-pro"), Some("mistral/codestral"), None] {
            let quote = table.quote(model, &u);
            assert_usd(quote.cost_usd, 0.0225);
            assert!(quote.estimated, "{model:?}");
        }
    }

    #[test]
    fn codex_and_provider_named_models_find_their_rows() {
        let table = PriceTable::default();
        // Cached input inside input is Codex's; here it arrives split.
        let u = usage(1_000_000, 1_000_000, 0, 1_000_000);
        let quote = table.quote(Some("gpt-5-codex"), &u);
        assert_usd(quote.cost_usd, 1.25 + 10.0 + 0.125);
        assert!(!quote.estimated);
        assert_usd(table.price(Some("gpt-5-mini"), &u), 0.25 + 2.0 + 0.025);
        let quote = table.quote(
            Some("anthropic/claude-sonnet-4-5"),
            &usage(1_000_000, 0, 0, 0),
        );
        assert_usd(quote.cost_usd, 3.0);
        assert!(!quote.estimated);
    }

    #[test]
    fn zero_tokens_cost_nothing_and_are_no_estimate_whatever_the_model() {
        let quote = PriceTable::default().quote(Some("<synthetic>"), &TokenUsage::default());
        assert_eq!(
            quote,
            Quote {
                cost_usd: 0.0,
                estimated: false
            }
        );
    }

    #[test]
    fn the_longest_matching_prefix_wins() {
        let mut table = PriceTable::default();
        table.models.insert(
            "claude-opus-4-5".to_owned(),
            ModelPrice::builtin(5.0, 25.0, 6.25, 0.5),
        );
        let u = usage(1_000_000, 0, 0, 0);
        assert_usd(table.price(Some("claude-opus-4-5-20251101"), &u), 5.0);
        assert_usd(table.price(Some("claude-opus-4-1"), &u), 15.0);
    }

    #[test]
    fn a_table_from_config_replaces_the_rows_and_keeps_the_default_row_when_absent() {
        let table: PriceTable = serde_json::from_value(serde_json::json!({
            "models": {
                "local-llama": {"input": 0, "output": 0.5, "cache_write": 0, "cache_read": 0}
            }
        }))
        .unwrap();
        assert_eq!(table.models.len(), 1);
        assert_eq!(table.default, PriceTable::default().default);
        assert_usd(
            table.price(Some("local-llama-70b"), &usage(0, 2_000_000, 0, 0)),
            1.0,
        );
        assert!(
            table
                .quote(Some("claude-sonnet-4"), &usage(1, 0, 0, 0))
                .estimated
        );
    }

    #[test]
    fn a_negative_or_non_finite_price_is_refused() {
        let negative = serde_json::from_value::<ModelPrice>(serde_json::json!({
            "input": -1, "output": 1, "cache_write": 1, "cache_read": 1
        }));
        assert!(negative.is_err());
        assert!(UsdPerMillion::new(f64::NAN).is_err(), "NaN must be refused");
        assert_eq!(
            UsdPerMillion::new(f64::INFINITY),
            Err(PricingError::InvalidRate(f64::INFINITY))
        );
    }

    #[test]
    fn an_unknown_field_in_a_row_is_refused() {
        let typo = serde_json::from_value::<ModelPrice>(serde_json::json!({
            "input": 1, "output": 1, "cache_write": 1, "cache_read": 1, "cache_reads": 1
        }));
        assert!(typo.is_err());
    }
}
