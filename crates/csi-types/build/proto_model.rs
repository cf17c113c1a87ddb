//! A small reader for the subset of proto3 that the CSI specification uses.
//!
//! It is shared by `build.rs` (which needs the list of `csi_secret` fields to
//! generate redacting `Debug` impls) and by `tests/wire_fidelity.rs` (which
//! compares the project's `csi.proto` with the specification's protobuf
//! blocks). It understands messages, nested messages, enums, oneofs, maps,
//! `repeated`/`optional` labels, field and enum-value options, services and
//! streaming methods; it ignores `syntax`, `package`, `import`, `option` and
//! `extend` blocks, which carry no message layout.

// Each user of this shared file uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

/// One field of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field name as written.
    pub name: String,
    /// The field number.
    pub number: u32,
    /// The type as written (`string`, `.google.protobuf.Timestamp`, `map<string,string>`).
    pub ty: String,
    /// `repeated`, `optional`, `map` or `singular`.
    pub label: &'static str,
    /// The oneof this field belongs to, if any.
    pub oneof: Option<String>,
    /// The option names set to true on the field (`csi_secret`, `alpha_field`).
    pub options: Vec<String>,
}

/// One message, named by its full dotted path within the package (`Volume`,
/// `VolumeCapability.MountVolume`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// Message-level option names (`alpha_message`).
    pub options: Vec<String>,
}

/// One enum: values in declaration order as (name, number, options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enum {
    /// The values.
    pub values: Vec<(String, i32, Vec<String>)>,
}

/// One RPC of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method {
    /// The method name.
    pub name: String,
    /// The request message.
    pub request: String,
    /// The response message.
    pub response: String,
    /// Whether the response is a server stream.
    pub server_streaming: bool,
    /// Method-level option names.
    pub options: Vec<String>,
}

/// Everything read from one or more proto sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtoModel {
    /// Messages by full name.
    pub messages: BTreeMap<String, Message>,
    /// Enums by full name.
    pub enums: BTreeMap<String, Enum>,
    /// Services by name, each with its methods in declaration order.
    pub services: BTreeMap<String, Vec<Method>>,
}

/// A parse failure, with the token index where it happened.
#[derive(Debug)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '/' && chars.peek() == Some(&'/') {
            for c in chars.by_ref() {
                if c == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            let mut prev = ' ';
            for c in chars.by_ref() {
                if prev == '*' && c == '/' {
                    break;
                }
                prev = c;
            }
        } else if c == '"' {
            // Keep strings as one token without interpreting their content.
            out.push('"');
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                if !c.is_whitespace() {
                    out.push(c);
                }
            }
            out.push('"');
        } else {
            out.push(c);
        }
    }
    out
}

fn tokenize(src: &str) -> Vec<String> {
    let src = strip_comments(src);
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for c in src.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
        } else if "{}[]()<>;=,".contains(c) {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
            tokens.push(c.to_string());
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    tokens
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
    model: ProtoModel,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, ParseError> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| ParseError("unexpected end of input".into()))?;
        self.pos += 1;
        Ok(t)
    }

    fn expect(&mut self, want: &str) -> Result<(), ParseError> {
        let got = self.next()?;
        if got == want {
            Ok(())
        } else {
            Err(ParseError(format!(
                "expected `{want}`, found `{got}` at token {}",
                self.pos - 1
            )))
        }
    }

    /// Skips a balanced `{ ... }` block whose `{` is next.
    fn skip_block(&mut self) -> Result<(), ParseError> {
        self.expect("{")?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()?.as_str() {
                "{" => depth += 1,
                "}" => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// Skips to and past the next `;`.
    fn skip_statement(&mut self) -> Result<(), ParseError> {
        while self.next()? != ";" {}
        Ok(())
    }

    /// Reads `[ (a) = true, (b) = true ]` if present, returning the option names.
    fn bracket_options(&mut self) -> Result<Vec<String>, ParseError> {
        let mut options = Vec::new();
        if self.peek() != Some("[") {
            return Ok(options);
        }
        self.next()?;
        loop {
            let t = self.next()?;
            match t.as_str() {
                "]" => break,
                "(" => {
                    let name = self.next()?;
                    self.expect(")")?;
                    self.expect("=")?;
                    let value = self.next()?;
                    if value == "true" {
                        options.push(name);
                    }
                }
                "," => {}
                other => {
                    // A plain option such as `deprecated = true`.
                    self.expect("=")?;
                    let value = self.next()?;
                    if value == "true" {
                        options.push(other.to_string());
                    }
                }
            }
        }
        Ok(options)
    }

    /// Reads `option (name) = true;` returning the name when true.
    fn option_statement(&mut self) -> Result<Option<String>, ParseError> {
        self.expect("option")?;
        let mut name = String::new();
        loop {
            let t = self.next()?;
            match t.as_str() {
                "(" | ")" => {}
                "=" => break,
                _ => name.push_str(&t),
            }
        }
        let value = self.next()?;
        self.expect(";")?;
        Ok((value == "true").then_some(name))
    }

    fn file(&mut self) -> Result<(), ParseError> {
        while let Some(t) = self.peek() {
            match t {
                "syntax" | "package" | "import" | "option" => self.skip_statement()?,
                "extend" => {
                    self.next()?;
                    self.next()?;
                    self.skip_block()?;
                }
                "message" => self.message("")?,
                "enum" => self.enumeration("")?,
                "service" => self.service()?,
                ";" => {
                    self.next()?;
                }
                other => {
                    return Err(ParseError(format!(
                        "unexpected `{other}` at top level (token {})",
                        self.pos
                    )));
                }
            }
        }
        Ok(())
    }

    fn message(&mut self, scope: &str) -> Result<(), ParseError> {
        self.expect("message")?;
        let name = self.next()?;
        let full = if scope.is_empty() {
            name
        } else {
            format!("{scope}.{name}")
        };
        self.expect("{")?;
        let mut message = Message::default();
        self.message_body(&full, &mut message, None)?;
        if self.model.messages.insert(full.clone(), message).is_some() {
            return Err(ParseError(format!("message `{full}` defined twice")));
        }
        Ok(())
    }

    /// Reads fields until the closing `}` of the message or oneof.
    fn message_body(
        &mut self,
        full: &str,
        message: &mut Message,
        oneof: Option<&str>,
    ) -> Result<(), ParseError> {
        loop {
            let t = self
                .peek()
                .ok_or_else(|| ParseError(format!("unterminated message `{full}`")))?
                .to_string();
            match t.as_str() {
                "}" => {
                    self.next()?;
                    return Ok(());
                }
                ";" => {
                    self.next()?;
                }
                "message" => self.message(full)?,
                "enum" => self.enumeration(full)?,
                "option" => {
                    if let Some(o) = self.option_statement()? {
                        message.options.push(o);
                    }
                }
                "reserved" => self.skip_statement()?,
                "oneof" => {
                    self.next()?;
                    let name = self.next()?;
                    self.expect("{")?;
                    self.message_body(full, message, Some(&name))?;
                }
                _ => {
                    let field = self.field(oneof)?;
                    message.fields.push(field);
                }
            }
        }
    }

    fn field(&mut self, oneof: Option<&str>) -> Result<Field, ParseError> {
        let mut label = "singular";
        let mut t = self.next()?;
        if t == "repeated" || t == "optional" {
            label = if t == "repeated" {
                "repeated"
            } else {
                "optional"
            };
            t = self.next()?;
        }
        let ty = if t == "map" {
            label = "map";
            self.expect("<")?;
            let k = self.next()?;
            self.expect(",")?;
            let v = self.next()?;
            self.expect(">")?;
            format!("map<{k},{v}>")
        } else {
            t
        };
        let name = self.next()?;
        self.expect("=")?;
        let number_token = self.next()?;
        let number = number_token
            .parse()
            .map_err(|_| ParseError(format!("field `{name}` has a bad number `{number_token}`")))?;
        let options = self.bracket_options()?;
        self.expect(";")?;
        Ok(Field {
            name,
            number,
            ty,
            label,
            oneof: oneof.map(str::to_string),
            options,
        })
    }

    fn enumeration(&mut self, scope: &str) -> Result<(), ParseError> {
        self.expect("enum")?;
        let name = self.next()?;
        let full = if scope.is_empty() {
            name
        } else {
            format!("{scope}.{name}")
        };
        self.expect("{")?;
        let mut e = Enum::default();
        loop {
            let t = self.next()?;
            match t.as_str() {
                "}" => break,
                ";" => {}
                "option" | "reserved" => self.skip_statement()?,
                _ => {
                    self.expect("=")?;
                    let n = self.next()?;
                    let number = n
                        .parse()
                        .map_err(|_| ParseError(format!("enum value `{t}` has a bad number")))?;
                    let options = self.bracket_options()?;
                    self.expect(";")?;
                    e.values.push((t, number, options));
                }
            }
        }
        self.model.enums.insert(full, e);
        Ok(())
    }

    fn service(&mut self) -> Result<(), ParseError> {
        self.expect("service")?;
        let name = self.next()?;
        self.expect("{")?;
        let mut methods = Vec::new();
        loop {
            let t = self.next()?;
            match t.as_str() {
                "}" => break,
                ";" => {}
                "option" => {
                    self.pos -= 1;
                    self.option_statement()?;
                }
                "rpc" => {
                    let method = self.next()?;
                    self.expect("(")?;
                    let request = self.next()?;
                    self.expect(")")?;
                    self.expect("returns")?;
                    self.expect("(")?;
                    let mut response = self.next()?;
                    let mut server_streaming = false;
                    if response == "stream" {
                        server_streaming = true;
                        response = self.next()?;
                    }
                    self.expect(")")?;
                    let mut options = Vec::new();
                    if self.peek() == Some("{") {
                        self.next()?;
                        loop {
                            match self.peek() {
                                Some("}") => {
                                    self.next()?;
                                    break;
                                }
                                Some("option") => {
                                    if let Some(o) = self.option_statement()? {
                                        options.push(o);
                                    }
                                }
                                Some(_) => {
                                    self.next()?;
                                }
                                None => return Err(ParseError("unterminated rpc".into())),
                            }
                        }
                    } else {
                        self.expect(";")?;
                    }
                    methods.push(Method {
                        name: method,
                        request,
                        response,
                        server_streaming,
                        options,
                    });
                }
                other => {
                    return Err(ParseError(format!(
                        "unexpected `{other}` in service `{name}`"
                    )));
                }
            }
        }
        self.model.services.insert(name, methods);
        Ok(())
    }
}

/// Parses proto3 source text into a model.
pub fn parse(src: &str) -> Result<ProtoModel, ParseError> {
    let mut p = Parser {
        tokens: tokenize(src),
        pos: 0,
        model: ProtoModel::default(),
    };
    p.file()?;
    Ok(p.model)
}

/// Concatenates the bodies of every ```` ```protobuf ```` block of a Markdown document.
pub fn protobuf_blocks(markdown: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in markdown.lines() {
        if !inside && line.trim_start().starts_with("```protobuf") {
            inside = true;
        } else if inside && line.trim_start().starts_with("```") {
            inside = false;
            out.push('\n');
        } else if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl ProtoModel {
    /// Every (message, field) pair marked `(csi_secret) = true`.
    pub fn secret_fields(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, message) in &self.messages {
            for field in &message.fields {
                if field.options.iter().any(|o| o == "csi_secret") {
                    out.push((name.clone(), field.name.clone()));
                }
            }
        }
        out
    }
}
