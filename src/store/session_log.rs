//! The writer's memory of recent calls, and where each new call's shared
//! content goes: which stored messages, tools and token runs it reuses,
//! and which rows it adds.
//!
//! A call usually extends an earlier call of its session: the same
//! messages plus the answer and a tool result; the same prompt ids plus the
//! completion and the new ids. The writer keeps, per session, the last few
//! calls' paths (node and run ids with their contents) and the last few
//! calls of any session, and places a new call after the **longest stored
//! prefix** it shares with any of them — by content, compared exactly, so
//! calls that arrive out of order or branch (concurrent calls, sub-agents,
//! retries, a context that was summarised) still find their real parent,
//! and a call that shares nothing is stored whole. Token ids are matched
//! run by run: a prompt that re-tokenizes the previous turn differently
//! shares the runs before the difference and stores the rest.
//!
//! A session the writer does not remember (after a restart, or evicted:
//! the memory is bounded by [`BUDGET`] bytes) is looked up once through the
//! session index: its latest calls are read back and remembered.
//!
//! What the writer remembers must match the database. Three things could
//! break that, and each is handled: a transaction that fails is rolled back
//! (the writer forgets everything: [`SessionLog::clear`]); a record whose
//! statements fail is rolled back to its savepoint and never remembered;
//! and shared rows swept after deletions may free ids that are later
//! reused — every sweep advances `gc_epoch`, which the writer checks at the
//! start of each batch ([`SessionLog::check_epoch`]), and the writer's own
//! session deletions forget that session ([`SessionLog::forget_session`]).
//!
//! The writer also keeps the raw references (`raw`): the first call of each
//! kind whose raw parts were stored without one becomes its kind's
//! reference, announced to the encoding tasks once its transaction
//! commits; a later call encoded against a reference that has since been
//! swept is compressed again without it.

use crate::store::content::{self, ContentReader, MessagePath, Shared, Swept, TokenPath};

/// A shared row as the writer remembers it: its id and its text.
type StoredText = (i64, Arc<str>);
use crate::store::error::{StoreError, StoreResult};
use crate::store::raw::{self, References};
use crate::store::row::{EncodedRow, SettledRaw};
use hashlink::LruCache;
use rusqlite::Connection;
use std::collections::VecDeque;
use std::sync::Arc;

/// Calls remembered per session.
const PER_SESSION: usize = 4;

/// Calls of any session remembered (a new session's first call often
/// shares a system prompt or a task prompt with another session's).
const RECENT: usize = 4;

/// The most bytes of content the writer remembers.
pub(crate) const BUDGET: usize = 64 << 20;

/// A call's shared content, as the writer places it.
#[derive(Debug, Default)]
pub(crate) struct Content {
    /// The call's session, if any.
    pub session: Option<String>,
    /// Each input message's JSON.
    pub messages: Vec<String>,
    /// `response_message`'s JSON, when there is one.
    pub answer: Option<String>,
    /// The tool list's JSON, when tools were offered.
    pub tools: Option<String>,
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The choices with token data.
    pub completions: Vec<Completion>,
}

/// One choice's token data.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    /// The choice's position.
    pub choice: usize,
    /// Its completion token ids.
    pub token_ids: Vec<u32>,
    /// Its logprobs, packed.
    pub logprobs: Option<Vec<u8>>,
    /// Its top logprobs, compressed.
    pub top_logprobs: Option<Vec<u8>>,
}

/// Where a call's content went: the ids its row points at.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Placed {
    /// The last input message's node.
    pub messages_node: Option<i64>,
    /// The answer's node.
    pub answer_node: Option<i64>,
    /// The tool list.
    pub tools: Option<i64>,
    /// The prompt's last run.
    pub prompt_run: Option<i64>,
    /// Each completion's run (in `Content::completions` order).
    pub completion_runs: Vec<Option<i64>>,
    /// The raw blob, when the writer settled it against another reference.
    pub raw: Option<SettledRaw>,
}

/// A call as the writer remembers it.
#[derive(Debug)]
struct Remembered {
    session: Option<String>,
    messages: MessagePath,
    answer: Option<StoredText>,
    tools: Option<StoredText>,
    prompt: TokenPath,
    completions: Vec<(i64, Arc<[u32]>)>,
}

impl Remembered {
    /// What the call holds in memory, in bytes (a token counts four).
    fn bytes(&self) -> usize {
        let texts = self.messages.iter().chain(&self.answer).chain(&self.tools);
        let tokens = self.prompt.iter().chain(&self.completions);
        texts.map(|(_, t)| t.len()).sum::<usize>() + 4 * tokens.map(|(_, t)| t.len()).sum::<usize>()
    }

    /// Whether the call points at a row that was swept.
    fn touches(&self, swept: &Swept) -> bool {
        let nodes = self.messages.iter().chain(self.answer.as_ref());
        let runs = self.prompt.iter().chain(self.completions.iter());
        nodes
            .map(|(id, _)| *id)
            .any(|id| swept.contains(Shared::MessageNodes, id))
            || runs
                .map(|(id, _)| *id)
                .any(|id| swept.contains(Shared::TokenRuns, id))
            || self
                .tools
                .as_ref()
                .is_some_and(|(id, _)| swept.contains(Shared::ToolLists, *id))
    }
}

/// A placed call, to remember once its record is stored.
pub(crate) struct Pending(Remembered);

/// The writer's memory of recent calls, and of the raw references it
/// stored (announced to the encoding tasks once committed).
pub(crate) struct SessionLog {
    sessions: LruCache<Option<String>, VecDeque<Arc<Remembered>>>,
    recent: VecDeque<Arc<Remembered>>,
    bytes: usize,
    epoch: Option<i64>,
    references: Arc<References>,
    announcing: Vec<Announcement>,
}

/// A raw reference stored in the current transaction: its kind, id, lines.
pub(crate) struct Announcement(String, i64, Arc<[u8]>);

impl SessionLog {
    /// An empty memory announcing raw references to `references`.
    pub(crate) fn new(references: Arc<References>) -> SessionLog {
        SessionLog {
            sessions: LruCache::new_unbounded(),
            recent: VecDeque::new(),
            bytes: 0,
            epoch: None,
            references,
            announcing: Vec::new(),
        }
    }

    /// Forgets everything (after a failed transaction: what it placed and
    /// stored is gone).
    pub(crate) fn clear(&mut self) {
        *self = SessionLog::new(self.references.clone());
    }

    /// Forgets everything if shared rows were swept since the last check,
    /// the announced raw references too.
    pub(crate) fn check_epoch(&mut self, conn: &Connection) -> StoreResult<()> {
        let epoch = content::gc_epoch(conn)?;
        if self.epoch != Some(epoch) {
            self.clear();
            self.references.forget(|_| true);
            self.epoch = Some(epoch);
        }
        Ok(())
    }

    /// The raw blob of `row` as it is to be stored: counts its reference,
    /// or compresses it without one when that reference is gone, or makes
    /// it its kind's first reference. `None`: as encoded. The announcement
    /// is for [`announce`](Self::announce) once the record is stored.
    pub(crate) fn settle_raw(
        &mut self,
        conn: &Connection,
        row: &EncodedRow,
    ) -> StoreResult<(Option<SettledRaw>, Option<Announcement>)> {
        if let Some(id) = row.reference_id() {
            if content::acquire(conn, Shared::RawReferences, id, 1)? {
                return Ok((None, None));
            }
            return Ok((row.recompress(None)?, None));
        }
        let Some((kind, lines)) = row.candidate() else {
            return Ok((None, None));
        };
        let taken =
            self.references.get(kind).is_some() || self.announcing.iter().any(|a| a.0 == kind);
        if taken {
            return Ok((None, None));
        }
        let blob = raw::reference_blob(lines).map_err(|source| StoreError::Encode {
            what: "a raw reference",
            source,
        })?;
        let id = content::insert_reference(conn, 1, &blob)?;
        let settled = row.recompress(Some((id, lines)))?;
        Ok((
            settled,
            Some(Announcement(kind.to_string(), id, lines.clone())),
        ))
    }

    /// Keeps a stored record's announcement until its transaction commits.
    pub(crate) fn announce(&mut self, announcement: Option<Announcement>) {
        self.announcing.extend(announcement);
    }

    /// Announces the raw references of the transaction that committed.
    pub(crate) fn committed(&mut self) {
        for Announcement(kind, id, lines) in self.announcing.drain(..) {
            self.references.publish(kind, id, lines);
        }
    }

    /// Forgets one session's calls (it was deleted), every call that
    /// points at a row its deletion swept and the raw references it swept
    /// (so their kinds get new ones), then takes the epoch that sweep left
    /// (the writer's own sweep, in its own transaction: nothing else swept
    /// meanwhile).
    pub(crate) fn forget_session(
        &mut self,
        conn: &Connection,
        session: &str,
        swept: &Swept,
    ) -> StoreResult<()> {
        let gone = |id| swept.contains(Shared::RawReferences, id);
        self.references.forget(gone);
        self.announcing.retain(|a| !gone(a.1));
        let key = Some(session.to_string());
        let mut freed = 0;
        for (owner, calls) in self.sessions.iter_mut() {
            calls.retain(|c| {
                let keep = *owner != key && !c.touches(swept);
                if !keep {
                    freed += c.bytes();
                }
                keep
            });
        }
        self.bytes = self.bytes.saturating_sub(freed);
        self.recent
            .retain(|c| c.session != key && !c.touches(swept));
        self.epoch = Some(content::gc_epoch(conn)?);
        Ok(())
    }

    /// Stores what of `content` is not stored yet and returns where it all
    /// is, with the call to remember once its record is in.
    pub(crate) fn place(
        &mut self,
        conn: &Connection,
        content: &Content,
    ) -> StoreResult<(Placed, Pending)> {
        let candidates = self.candidates(conn, content.session.as_deref())?;
        let (messages_node, messages, answer) = place_messages(conn, &candidates, content)?;
        let tools = place_tools(conn, &candidates, content.tools.as_deref())?;
        let (prompt_run, prompt, completion_runs) = place_tokens(conn, &candidates, content)?;
        let completions: Vec<(i64, Arc<[u32]>)> = completion_runs
            .iter()
            .zip(&content.completions)
            .filter_map(|(run, c)| run.map(|id| (id, c.token_ids.as_slice().into())))
            .collect();
        let placed = Placed {
            messages_node,
            answer_node: answer.as_ref().map(|(id, _)| *id),
            tools: tools.as_ref().map(|(id, _)| *id),
            prompt_run,
            completion_runs,
            raw: None,
        };
        let pending = Pending(Remembered {
            session: content.session.clone(),
            messages,
            answer,
            tools,
            prompt,
            completions,
        });
        Ok((placed, pending))
    }

    /// Remembers a call whose record is stored.
    pub(crate) fn remember(&mut self, pending: Pending) {
        let call = Arc::new(pending.0);
        self.bytes += call.bytes();
        let calls = match self.sessions.get_mut(&call.session) {
            Some(calls) => calls,
            None => {
                self.sessions.insert(call.session.clone(), VecDeque::new());
                match self.sessions.get_mut(&call.session) {
                    Some(calls) => calls,
                    None => return,
                }
            }
        };
        calls.push_front(call.clone());
        if calls.len() > PER_SESSION
            && let Some(old) = calls.pop_back()
        {
            self.bytes = self.bytes.saturating_sub(old.bytes());
        }
        self.recent.push_front(call);
        self.recent.truncate(RECENT);
        while self.bytes > BUDGET {
            match self.sessions.remove_lru() {
                Some((_, calls)) => self.bytes = self.bytes.saturating_sub(total_bytes(&calls)),
                None => break,
            }
        }
    }

    /// The calls a new call of `session` may extend, most likely first: the
    /// session's latest (read back through the session index when they are
    /// not remembered), then the latest of any session.
    fn candidates(
        &mut self,
        conn: &Connection,
        session: Option<&str>,
    ) -> StoreResult<Vec<Arc<Remembered>>> {
        let key = session.map(str::to_string);
        if !self.sessions.contains_key(&key) {
            let calls = match session {
                Some(session) => latest_of_session(conn, session)?,
                None => VecDeque::new(),
            };
            self.bytes += total_bytes(&calls);
            self.sessions.insert(key.clone(), calls);
        }
        let mut candidates: Vec<Arc<Remembered>> = self
            .sessions
            .get(&key)
            .map(|calls| calls.iter().cloned().collect())
            .unwrap_or_default();
        for call in &self.recent {
            if !candidates.iter().any(|c| Arc::ptr_eq(c, call)) {
                candidates.push(call.clone());
            }
        }
        Ok(candidates)
    }
}

fn total_bytes(calls: &VecDeque<Arc<Remembered>>) -> usize {
    calls.iter().map(|c| c.bytes()).sum()
}

/// The latest calls of a session the writer does not remember, read back.
fn latest_of_session(conn: &Connection, session: &str) -> StoreResult<VecDeque<Arc<Remembered>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, messages_node, answer_node, tools, prompt_run FROM traces
         WHERE session_id = ?1 ORDER BY started_at DESC LIMIT ?2",
    )?;
    type Refs = (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<Refs> = stmt
        .query_map(rusqlite::params![session, PER_SESSION as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut reader = ContentReader::default();
    let mut calls = VecDeque::new();
    for (trace, messages, answer, tools, prompt) in rows {
        let messages = match messages {
            Some(node) => reader.messages(conn, node)?,
            None => Arc::default(),
        };
        let answer = match answer {
            Some(node) => reader.messages(conn, node)?.last().cloned(),
            None => None,
        };
        let tools = match tools {
            Some(id) => Some((id, reader.tools(conn, id)?)),
            None => None,
        };
        let prompt = match prompt {
            Some(run) => reader.tokens(conn, run)?,
            None => Arc::default(),
        };
        let mut completions = Vec::new();
        for stored in content::completions(conn, trace)? {
            if let Some(run) = stored.run {
                completions.extend(reader.tokens(conn, run)?.last().cloned());
            }
        }
        calls.push_back(Arc::new(Remembered {
            session: Some(session.to_string()),
            messages,
            answer,
            tools,
            prompt,
            completions,
        }));
    }
    Ok(calls)
}

/// A candidate's messages followed by its answer.
fn extended(call: &Remembered) -> impl Iterator<Item = &StoredText> {
    call.messages.iter().chain(call.answer.as_ref())
}

/// Places the input messages and the answer; returns the last message's
/// node, the messages' path, and the answer's node.
fn place_messages(
    conn: &Connection,
    candidates: &[Arc<Remembered>],
    content: &Content,
) -> StoreResult<(Option<i64>, MessagePath, Option<StoredText>)> {
    let texts = &content.messages;
    // The longest stored prefix, among the candidates' messages + answer.
    let mut prefix: Vec<StoredText> = Vec::new();
    for call in candidates {
        let shared = extended(call)
            .zip(texts)
            .take_while(|((_, stored), new)| **stored == ***new)
            .count();
        if shared > prefix.len() {
            prefix = extended(call).take(shared).cloned().collect();
        }
    }
    let mut refs = Refs::default();
    let mut path = prefix;
    // An answer can be reused only after messages that are all stored.
    let reused = (path.len() == texts.len())
        .then(|| existing_answer(candidates, &path, content))
        .flatten();
    let new_answer = content.answer.is_some() && reused.is_none();
    let fresh = &texts[path.len()..];
    for (i, text) in fresh.iter().enumerate() {
        let parent = path.last().map(|(id, _)| *id);
        if i == 0 {
            refs.add(Shared::MessageNodes, parent);
        }
        let last = i + 1 == fresh.len();
        let count = 1 + i64::from(last && new_answer);
        let id = content::insert_message(conn, parent, path.len(), count, text)?;
        path.push((id, text.as_str().into()));
    }
    let messages_node = path.last().map(|(id, _)| *id);
    if fresh.is_empty() && messages_node.is_some() {
        // An existing node ends the messages: the call and a new answer point at it.
        refs.add_n(
            Shared::MessageNodes,
            messages_node,
            1 + i64::from(new_answer),
        );
    }
    let answer = match (&content.answer, reused) {
        (None, _) => None,
        (Some(_), Some(found)) => {
            refs.add(Shared::MessageNodes, Some(found.0));
            Some(found)
        }
        (Some(text), None) => {
            let id = content::insert_message(conn, messages_node, texts.len(), 1, text)?;
            Some((id, text.as_str().into()))
        }
    };
    refs.apply(conn)?;
    Ok((messages_node, Arc::new(path), answer))
}

/// A stored answer node equal to the call's answer, after the call's
/// messages.
fn existing_answer(
    candidates: &[Arc<Remembered>],
    path: &[StoredText],
    content: &Content,
) -> Option<StoredText> {
    let answer = content.answer.as_deref()?;
    let position = path.len();
    let parent = path.last().map(|(id, _)| *id);
    candidates.iter().find_map(|call| {
        let ext: Vec<&StoredText> = extended(call).collect();
        let before = position
            .checked_sub(1)
            .map(|p| ext.get(p).map(|(id, _)| *id));
        let at = ext.get(position)?;
        let same_parent = match before {
            Some(before) => before == parent,
            None => parent.is_none(),
        };
        (same_parent && *at.1 == *answer).then(|| (*at).clone())
    })
}

/// Places the tool list: reused when a candidate offers the same one.
fn place_tools(
    conn: &Connection,
    candidates: &[Arc<Remembered>],
    tools: Option<&str>,
) -> StoreResult<Option<StoredText>> {
    let Some(tools) = tools else { return Ok(None) };
    let found = candidates
        .iter()
        .find_map(|c| c.tools.clone().filter(|(_, t)| **t == *tools));
    match found {
        Some((id, text)) => {
            let mut refs = Refs::default();
            refs.add(Shared::ToolLists, Some(id));
            refs.apply(conn)?;
            Ok(Some((id, text)))
        }
        None => Ok(Some((content::insert_tools(conn, 1, tools)?, tools.into()))),
    }
}

/// Places the prompt's and the completions' token ids; returns the prompt's
/// last run, its path, and each completion's run (none for a choice
/// without token ids).
fn place_tokens(
    conn: &Connection,
    candidates: &[Arc<Remembered>],
    content: &Content,
) -> StoreResult<(Option<i64>, TokenPath, Vec<Option<i64>>)> {
    let prompt = &content.prompt;
    let mut path: Vec<(i64, Arc<[u32]>)> = Vec::new();
    for call in candidates {
        let found = shared_runs(call, prompt);
        if covered(&found) > covered(&path) {
            path = found;
        }
    }
    let children = content
        .completions
        .iter()
        .filter(|c| !c.token_ids.is_empty())
        .count() as i64;
    let mut refs = Refs::default();
    let done = covered(&path);
    if done < prompt.len() {
        let parent = path.last().map(|(id, _)| *id);
        refs.add(Shared::TokenRuns, parent);
        let ids = &prompt[done..];
        let id = content::insert_run(conn, parent, done, 1 + children, ids)?;
        path.push((id, ids.into()));
    } else if let Some((id, _)) = path.last() {
        refs.add_n(Shared::TokenRuns, Some(*id), 1 + children);
    }
    let prompt_run = path.last().map(|(id, _)| *id);
    let mut runs = Vec::with_capacity(content.completions.len());
    for output in &content.completions {
        runs.push(match output.token_ids.as_slice() {
            [] => None,
            ids => Some(content::insert_run(conn, prompt_run, prompt.len(), 1, ids)?),
        });
    }
    refs.apply(conn)?;
    Ok((prompt_run, Arc::new(path), runs))
}

/// The runs of `call`'s prompt (and then of one of its completions) that
/// `prompt` starts with, whole runs only.
fn shared_runs(call: &Remembered, prompt: &[u32]) -> Vec<(i64, Arc<[u32]>)> {
    let mut runs = Vec::new();
    let mut at = 0;
    for (id, run) in call.prompt.iter() {
        if !prompt[at..].starts_with(run) {
            return runs;
        }
        at += run.len();
        runs.push((*id, run.clone()));
    }
    let next = call
        .completions
        .iter()
        .filter(|(_, ids)| !ids.is_empty() && prompt[at..].starts_with(ids))
        .max_by_key(|(_, ids)| ids.len());
    runs.extend(next.cloned());
    runs
}

/// How many ids a path of runs holds.
fn covered(path: &[(i64, Arc<[u32]>)]) -> usize {
    path.iter().map(|(_, run)| run.len()).sum()
}

/// References to existing shared rows, added when the call is placed.
#[derive(Default)]
struct Refs(Vec<(Shared, i64, i64)>);

impl Refs {
    fn add(&mut self, table: Shared, id: Option<i64>) {
        self.add_n(table, id, 1);
    }

    fn add_n(&mut self, table: Shared, id: Option<i64>, n: i64) {
        if let Some(id) = id {
            self.0.push((table, id, n));
        }
    }

    fn apply(self, conn: &Connection) -> StoreResult<()> {
        for (table, id, n) in self.0 {
            if !content::acquire(conn, table, id, n)? {
                // A remembered row that is not there: never store a call
                // pointing at it.
                return Err(StoreError::StaleMemory(table.table()));
            }
        }
        Ok(())
    }
}
