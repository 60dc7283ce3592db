//! Label selectors (`=`, `==`, `!=`, `in (...)`, `notin (...)`, `key`,
//! `!key`) and field selectors (`path=value`, `path!=value` on dotted JSON
//! paths such as `metadata.name`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn bad(s: &str) -> String {
    format!("unable to parse requirement: {s:?}")
}

fn parse_req(s: &str) -> Result<Req, String> {
    if let Some(open) = s.find('(') {
        let close = s.rfind(')').ok_or_else(|| bad(s))?;
        let head: Vec<&str> = s[..open].split_whitespace().collect();
        let values: Vec<String> =
            s[open + 1..close].split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        return match head.as_slice() {
            [k, "in"] => Ok(Req::In(k.to_string(), values)),
            [k, "notin"] => Ok(Req::NotIn(k.to_string(), values)),
            _ => Err(bad(s)),
        };
    }
    let kv = |op: &str| s.split_once(op).map(|(k, v)| (k.trim().to_string(), v.trim().to_string()));
    if let Some((k, v)) = kv("!=") {
        Ok(Req::Ne(k, v))
    } else if let Some((k, v)) = kv("==") {
        Ok(Req::Eq(k, v))
    } else if let Some((k, v)) = kv("=") {
        Ok(Req::Eq(k, v))
    } else if let Some(k) = s.strip_prefix('!') {
        Ok(Req::NotExists(k.trim().to_string()))
    } else if s.contains(char::is_whitespace) {
        Err(bad(s))
    } else {
        Ok(Req::Exists(s.to_string()))
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query value.
    pub fn parse(s: &str) -> Result<Self, String> {
        split_top(s).into_iter().map(parse_req).collect::<Result<_, _>>().map(LabelSelector)
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` query value (`a.b=v`, `a.b==v`, `a.b!=v`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in split_top(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: {part:?}; can't understand {part:?}"));
            };
            out.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the object's fields satisfy every requirement (a missing
    /// field counts as `""`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let got = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "x"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("a=1"));
        assert!(m("a==1,b"));
        assert!(!m("a!=1"));
        assert!(m("a in (1, 2),b notin (y)"));
        assert!(!m("a notin (1)"));
        assert!(m("!c"));
        assert!(!m("!a"));
        assert!(!m("c"));
        assert!(m("c notin (1)"));
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "n", "namespace": "d"}});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=n,metadata.namespace==d"));
        assert!(!m("metadata.name!=n"));
        assert!(m("spec.nodeName="));
    }
}
