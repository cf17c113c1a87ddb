//! The outcome of a suite run: one [`CaseResult`] per case, the closing
//! summary line and a JUnit XML rendering.

use std::fmt;
use std::time::Duration;

/// How one case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The driver did what the spec requires.
    Pass,
    /// The driver broke the spec; the reason says how.
    Fail(String),
    /// The case does not apply; the reason names the missing capability or setting.
    Skip(String),
}

impl Outcome {
    /// Whether the case passed.
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Pass)
    }

    /// Whether the case failed.
    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail(_))
    }

    /// Whether the case was skipped.
    pub fn is_skip(&self) -> bool {
        matches!(self, Outcome::Skip(_))
    }
}

/// One case's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name, e.g. `controller/create_volume/idempotent`.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, cleanup included.
    pub duration: Duration,
    /// What the driver did that the spec allows or tells the CO to
    /// tolerate, but users' tools may not expect; a case with warnings
    /// still passes.
    pub warnings: Vec<String>,
}

impl fmt::Display for CaseResult {
    /// `PASS name`, `FAIL name: reason` or `SKIP name: reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass => write!(f, "PASS {}", self.name),
            Outcome::Fail(r) => write!(f, "FAIL {}: {r}", self.name),
            Outcome::Skip(r) => write!(f, "SKIP {}: {r}", self.name),
        }
    }
}

/// The results of a run, in the order the cases ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One entry per case that matched the filter.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// The number of passed cases.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_pass()).count()
    }

    /// The number of failed cases.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_fail()).count()
    }

    /// The number of skipped cases.
    pub fn skipped(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_skip()).count()
    }

    /// The number of warnings, over all cases.
    pub fn warnings(&self) -> usize {
        self.results.iter().map(|r| r.warnings.len()).sum()
    }

    /// Whether no case failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// The outcome of the case called `name`, if it ran.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.outcome)
    }

    /// The closing line: `N passed, N failed, N skipped`, and `, N
    /// warnings` when there are any.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        );
        if self.warnings() > 0 {
            s.push_str(&format!(", {} warnings", self.warnings()));
        }
        s
    }

    /// The report as a JUnit XML document: one `<testsuite>`, one
    /// `<testcase>` per case with a `<failure>` or `<skipped>` child.
    ///
    /// ```
    /// use csi_testkit::{CaseResult, Outcome, Report};
    /// let report = Report { results: vec![CaseResult {
    ///     name: "a/b".into(),
    ///     outcome: Outcome::Fail("got <INTERNAL> & \"x\"".into()),
    ///     duration: std::time::Duration::from_millis(5),
    ///     warnings: vec![],
    /// }] };
    /// let xml = report.to_junit("csi");
    /// assert!(xml.contains(r#"<failure message="got &lt;INTERNAL&gt; &amp; &quot;x&quot;">"#));
    /// ```
    pub fn to_junit(&self, suite_name: &str) -> String {
        let total: f64 = self.results.iter().map(|r| r.duration.as_secs_f64()).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{total:.3}\">\n",
            xml_escape(suite_name),
            self.results.len(),
            self.failed(),
            self.skipped()
        ));
        for r in &self.results {
            let (class, name) = match r.name.rsplit_once('/') {
                Some((c, n)) => (c, n),
                None => (suite_name, r.name.as_str()),
            };
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(class),
                xml_escape(name),
                r.duration.as_secs_f64()
            ));
            let warnings: String = r.warnings.iter().map(|w| format!("WARN {w}\n")).collect();
            let system_out = if warnings.is_empty() {
                String::new()
            } else {
                format!("      <system-out>{}</system-out>\n", xml_escape(&warnings))
            };
            match &r.outcome {
                Outcome::Pass if system_out.is_empty() => out.push_str("/>\n"),
                Outcome::Pass => out.push_str(&format!(">\n{system_out}    </testcase>\n")),
                Outcome::Fail(reason) => out.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n{system_out}    </testcase>\n",
                    xml_escape(first_line(reason)),
                    xml_escape(reason)
                )),
                Outcome::Skip(reason) => out.push_str(&format!(
                    ">\n      <skipped message=\"{}\"/>\n{system_out}    </testcase>\n",
                    xml_escape(reason)
                )),
            }
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Escapes text for an XML attribute or element. Characters XML 1.0 cannot
/// carry at all (most control characters) become `\u{..}` text.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(xml_escape("x\u{1}y\nz"), "x\\u{1}y&#10;z");
    }

    #[test]
    fn summary_counts_each_outcome() {
        let r = |name: &str, outcome| CaseResult {
            name: name.into(),
            outcome,
            duration: Duration::ZERO,
            warnings: vec![],
        };
        let report = Report {
            results: vec![
                r("a", Outcome::Pass),
                r("b", Outcome::Fail("x".into())),
                r("c", Outcome::Skip("y".into())),
                r("d", Outcome::Pass),
            ],
        };
        assert_eq!(report.summary(), "2 passed, 1 failed, 1 skipped");
        assert!(!report.success());
        assert_eq!(report.results[1].to_string(), "FAIL b: x");
        let xml = report.to_junit("s");
        assert!(xml.contains("tests=\"4\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert!(xml.contains("<skipped message=\"y\"/>"));
    }

    #[test]
    fn warnings_are_counted_and_rendered_but_do_not_fail() {
        let report = Report {
            results: vec![CaseResult {
                name: "a/b".into(),
                outcome: Outcome::Pass,
                duration: Duration::ZERO,
                warnings: vec!["x <y>".into(), "z".into()],
            }],
        };
        assert!(report.success());
        assert_eq!(
            report.summary(),
            "1 passed, 0 failed, 0 skipped, 2 warnings"
        );
        let xml = report.to_junit("s");
        assert!(
            xml.contains("<system-out>WARN x &lt;y&gt;&#10;WARN z&#10;</system-out>"),
            "{xml}"
        );
    }
}
