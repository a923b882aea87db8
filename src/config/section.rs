//! Reading one TOML table with key paths: every value is taken by name, every error names its key path, and
//! keys nobody took are reported as unknown (with the allowed keys and a close match).

use super::ConfigError;

/// One table of the config being read, e.g. `sources.trades`.
pub struct Section<'a> {
    path: String,
    table: &'a toml::Table,
    allowed: Vec<&'static str>,
}

impl<'a> Section<'a> {
    pub fn new(path: impl Into<String>, table: &'a toml::Table) -> Section<'a> {
        Section { path: path.into(), table, allowed: Vec::new() }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The key path of `key` in this section, e.g. `sources.trades.path`.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key_path(key), message)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.allowed.push(key);
        self.table.get(key)
    }

    fn wrong_type(&self, key: &str, want: &str, got: &toml::Value) -> ConfigError {
        self.error(key, format!("must be {want}, not {} `{got}`", got.type_str()))
    }

    pub fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    pub fn required_str(&mut self, key: &'static str, example: &str) -> Result<&'a str, ConfigError> {
        self.str(key)?.ok_or_else(|| self.error(key, format!("is required, e.g. {key} = {example}")))
    }

    pub fn u64(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(other) => Err(self.wrong_type(key, "a non-negative integer", other)),
        }
    }

    pub fn duration_us(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) => super::duration::parse_duration_us(s).map(Some).map_err(|m| self.error(key, m)),
        }
    }

    pub fn table(&mut self, key: &'static str) -> Result<Option<&'a toml::Table>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(other) => Err(self.wrong_type(key, "a table", other)),
        }
    }

    /// Whether the table has `key` (which counts as read: the caller reports on it).
    pub fn has(&mut self, key: &'static str) -> bool {
        self.allowed.push(key);
        self.table.contains_key(key)
    }

    /// Marks keys as allowed without reading them (read elsewhere).
    pub fn allow(&mut self, keys: &[&'static str]) {
        self.allowed.extend_from_slice(keys);
    }

    /// Errors for every key of the table that was not read, in key order.
    pub fn unknown_keys(&self, what: &str) -> Vec<ConfigError> {
        self.table
            .keys()
            .filter(|k| !self.allowed.contains(&k.as_str()))
            .map(|k| {
                let hint = match closest(k, &self.allowed) {
                    Some(c) => format!("did you mean `{c}`? "),
                    None => String::new(),
                };
                let mut allowed = self.allowed.clone();
                allowed.sort_unstable();
                allowed.dedup();
                self.error(k, format!("unknown key for {what}; {hint}allowed keys: {}", allowed.join(", ")))
            })
            .collect()
    }
}

/// The allowed key nearest to `key` by edit distance, if it is close enough to be a typo.
fn closest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed.iter().map(|a| (edit_distance(key, a), *a)).filter(|(d, a)| *d <= 2.max(a.len() / 4)).min().map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys() {
        assert_eq!(closest("pathh", &["path", "format", "schema"]), Some("path"));
        assert_eq!(closest("zzzz", &["path", "format"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
