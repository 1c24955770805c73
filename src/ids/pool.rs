//! One pool of plain ids (a VLAN, AS, GENID or EXTCOMM index) and kuid's allocation rules for
//! it (reference/kuid.md §3.6): static ids, dynamic ids (best fit in the main table, lowest free
//! inside a range), ranges split into aligned blocks with a table of their own, and releases.
//!
//! A pool is a *main* table over `[0, max]` plus one table per range claim over the range's
//! bounds. Every item (an id, an id block, a reserved or claimed range block) has exactly one
//! owner, the claim (name + uid). Every change goes through two primitives, [`IdPool::put`]
//! and [`IdPool::drop_item`], which record their inverse in a [`Journal`], so a store
//! transaction that fails or is dropped rolls the pool back exactly, and the slots a
//! transaction touched are what it persists.
//!
//! Where kuid has quirks we do the sane thing, and say so: a range resizes (kuid keeps the
//! first bounds), a static id laid on a taken id is refused even inside a range block, and
//! releasing a range releases the ids claimed inside it (their owners are reported so their
//! claims can say so).
//!
//! Invariant: pure data: knows claims only as owner identities, nothing of objects or storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::space::{aligned_blocks, Space, SpaceError};

/// The claim an item belongs to: kuid identifies owners by name and uid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct Owner {
    pub name: String,
    pub uid: String,
}

/// What kind of claim made an item (kuid's `be.kuid.dev/claim-type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum ClaimType {
    StaticId,
    DynamicId,
    Range,
}

impl ClaimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimType::StaticId => "staticID",
            ClaimType::DynamicId => "dynamicID",
            ClaimType::Range => "range",
        }
    }
}

/// One allocated item of a table: ids `[start, end]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Item {
    pub end: u128,
    pub owner: Owner,
    pub claim_type: ClaimType,
    pub labels: BTreeMap<String, String>,
}

/// Which table of a pool: the main one, or the table of a range claim (by its name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum TableRef {
    Main,
    Range(String),
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableRef::Main => f.write_str("the index"),
            TableRef::Range(r) => write!(f, "range {r}"),
        }
    }
}

/// The items of one table and its free space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub space: Space,
    pub items: BTreeMap<u128, Item>,
}

impl Table {
    fn new(lo: u128, hi: u128) -> Table {
        Table { space: Space::new(lo, hi), items: BTreeMap::new() }
    }

    /// The item holding `id`.
    pub fn item_at(&self, id: u128) -> Option<(u128, &Item)> {
        let (&s, item) = self.items.range(..=id).next_back()?;
        (item.end >= id).then_some((s, item))
    }
}

/// An inverse operation, recorded by every change of a pool.
#[derive(Debug, Clone)]
enum Undo {
    /// Put the slot back as it was (`None`: empty).
    Slot { table: TableRef, start: u128, prev: Option<Item> },
    /// Put the range table's bounds back (`None`: the table did not exist).
    Bounds { name: String, prev: Option<(u128, u128)> },
}

/// The inverse of every change since it was created, for rolling back; and so the slots a
/// transaction touched.
#[derive(Debug, Default, Clone)]
pub(crate) struct Journal {
    undo: Vec<Undo>,
}

impl Journal {
    pub fn len(&self) -> usize {
        self.undo.len()
    }

    /// The (table, start) slots and range tables this journal's changes touched.
    pub fn touched(&self) -> (Vec<(TableRef, u128)>, Vec<String>) {
        let mut slots = Vec::new();
        let mut tables = Vec::new();
        for u in &self.undo {
            match u {
                Undo::Slot { table, start, .. } => slots.push((table.clone(), *start)),
                Undo::Bounds { name, .. } => tables.push(name.clone()),
            }
        }
        slots.sort();
        slots.dedup();
        tables.sort();
        tables.dedup();
        (slots, tables)
    }
}

/// Why a claim was refused, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("id {id} is above the largest id {max} this index allows")]
    TooLarge { id: u128, max: u128 },
    #[error("range {start}-{end} is invalid: its start is above its end")]
    Backwards { start: u128, end: u128 },
    #[error("id {id} is already claimed by {by}")]
    Taken { id: u128, by: String },
    #[error("range {start}-{end} overlaps ids claimed by {by}")]
    Overlaps { start: u128, end: u128, by: String },
    #[error("no free id left in {what}")]
    Exhausted { what: String },
    #[error("{range} does not exist in this index")]
    NoRange { range: String },
    #[error("range {name} cannot shrink to {start}-{end}: id {id} inside it is claimed by {by}")]
    ShrinkHeld { name: String, start: u128, end: u128, id: u128, by: String },
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Granted {
    Id { table: TableRef, id: u128 },
    Range { start: u128, end: u128 },
}

/// A pool of ids `[0, max]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdPool {
    max: u128,
    main: Table,
    ranges: BTreeMap<String, Table>,
    /// The items of each owner, so a claim finds what it holds without a scan.
    owned: HashMap<Owner, BTreeSet<(TableRef, u128)>>,
}

impl IdPool {
    pub fn new(max: u128) -> IdPool {
        IdPool { max, main: Table::new(0, max), ranges: BTreeMap::new(), owned: HashMap::new() }
    }

    pub fn max(&self) -> u128 {
        self.max
    }

    /// Rebuilds a pool from its persisted items: the main table's, then each range table's
    /// (whose bounds are its range blocks in the main table).
    pub fn restore(max: u128, main: Vec<(u128, Item)>, ranges: Vec<(String, u128, Item)>) -> IdPool {
        let mut p = IdPool::new(max);
        let j = &mut Journal::default();
        let mut bounds: BTreeMap<String, (u128, u128)> = BTreeMap::new();
        for (start, item) in main {
            if item.claim_type == ClaimType::Range {
                let b = bounds.entry(item.owner.name.clone()).or_insert((start, item.end));
                b.0 = b.0.min(start);
                b.1 = b.1.max(item.end);
            }
            if let Err(e) = p.put(j, &TableRef::Main, start, item) {
                log::warn!("dropping a stored id: {e}");
            }
        }
        for (name, (lo, hi)) in bounds {
            p.set_bounds(j, &name, lo, hi);
        }
        for (name, start, item) in ranges {
            if let Err(e) = p.put(j, &TableRef::Range(name.clone()), start, item) {
                log::warn!("dropping a stored id of range {name}: {e}");
            }
        }
        p
    }

    pub fn main(&self) -> &Table {
        &self.main
    }

    pub fn ranges(&self) -> &BTreeMap<String, Table> {
        &self.ranges
    }

    pub fn table(&self, t: &TableRef) -> Option<&Table> {
        match t {
            TableRef::Main => Some(&self.main),
            TableRef::Range(name) => self.ranges.get(name),
        }
    }

    fn table_mut(&mut self, t: &TableRef) -> Option<&mut Table> {
        match t {
            TableRef::Main => Some(&mut self.main),
            TableRef::Range(name) => self.ranges.get_mut(name),
        }
    }

    /// Every item `owner` holds, in any table.
    pub fn held_by(&self, owner: &Owner) -> Vec<(TableRef, u128, &Item)> {
        let Some(set) = self.owned.get(owner) else { return Vec::new() };
        set.iter()
            .filter_map(|(t, s)| self.table(t).and_then(|tb| tb.items.get(s)).map(|i| (t.clone(), *s, i)))
            .collect()
    }

    /// Stores an item without journaling (the primitives and the rollback use this).
    fn raw_insert(&mut self, table: &TableRef, start: u128, item: Item) -> Result<(), SpaceError> {
        let t = self.table_mut(table).ok_or(SpaceError::NotFree { start, end: item.end })?;
        t.space.take(start, item.end)?;
        let owner = item.owner.clone();
        t.items.insert(start, item);
        self.owned.entry(owner).or_default().insert((table.clone(), start));
        Ok(())
    }

    /// Removes an item without journaling.
    fn raw_remove(&mut self, table: &TableRef, start: u128) -> Option<Item> {
        let t = self.table_mut(table)?;
        let item = t.items.remove(&start)?;
        // The item's ids are taken by construction.
        let _ = t.space.give(start, item.end);
        if let Some(set) = self.owned.get_mut(&item.owner) {
            set.remove(&(table.clone(), start));
            if set.is_empty() {
                self.owned.remove(&item.owner);
            }
        }
        Some(item)
    }

    // -- primitives: every change of a pool is one of these ----------------------------------

    /// Stores `item` at `start` of `table`, taking its ids. The ids must be free.
    fn put(&mut self, j: &mut Journal, table: &TableRef, start: u128, item: Item) -> Result<(), SpaceError> {
        self.raw_insert(table, start, item)?;
        j.undo.push(Undo::Slot { table: table.clone(), start, prev: None });
        Ok(())
    }

    /// Gives the item at `start` of `table` new labels (a claim re-applied with other labels).
    fn relabel(
        &mut self,
        j: &mut Journal,
        table: &TableRef,
        start: u128,
        item: Item,
        labels: &BTreeMap<String, String>,
    ) {
        if &item.labels != labels {
            self.drop_item(j, table, start);
            let _ = self.put(j, table, start, Item { labels: labels.clone(), ..item });
        }
    }

    /// Removes the item at `start` of `table`, freeing its ids.
    fn drop_item(&mut self, j: &mut Journal, table: &TableRef, start: u128) -> Option<Item> {
        let item = self.raw_remove(table, start)?;
        j.undo.push(Undo::Slot { table: table.clone(), start, prev: Some(item.clone()) });
        Some(item)
    }

    /// Creates or re-bounds the table of range `name`; existing items must fit the new bounds.
    fn set_bounds(&mut self, j: &mut Journal, name: &str, lo: u128, hi: u128) {
        let prev = self.ranges.get(name).map(|t| (t.space.lo(), t.space.hi()));
        if prev == Some((lo, hi)) {
            return;
        }
        let mut table = Table::new(lo, hi);
        if let Some(old) = self.ranges.remove(name) {
            for (s, item) in old.items {
                let _ = table.space.take(s, item.end);
                table.items.insert(s, item);
            }
        }
        self.ranges.insert(name.to_string(), table);
        j.undo.push(Undo::Bounds { name: name.to_string(), prev });
    }

    /// Removes the (empty) table of range `name`.
    fn remove_table(&mut self, j: &mut Journal, name: &str) {
        if let Some(t) = self.ranges.remove(name) {
            debug_assert!(t.items.is_empty(), "a range table is emptied before it goes");
            j.undo.push(Undo::Bounds { name: name.to_string(), prev: Some((t.space.lo(), t.space.hi())) });
        }
    }

    /// Undoes the journal's changes back to `len` entries.
    pub fn rollback(&mut self, j: &mut Journal, len: usize) {
        while j.undo.len() > len {
            let Some(u) = j.undo.pop() else { break };
            match u {
                Undo::Slot { table, start, prev } => {
                    self.raw_remove(&table, start);
                    if let Some(item) = prev {
                        let _ = self.raw_insert(&table, start, item);
                    }
                }
                Undo::Bounds { name, prev } => match prev {
                    None => {
                        self.ranges.remove(&name);
                    }
                    Some((lo, hi)) => {
                        let mut table = Table::new(lo, hi);
                        if let Some(old) = self.ranges.remove(&name) {
                            for (s, item) in old.items {
                                let _ = table.space.take(s, item.end);
                                table.items.insert(s, item);
                            }
                        }
                        self.ranges.insert(name, table);
                    }
                },
            }
        }
    }

    // -- claims -------------------------------------------------------------------------------

    fn describe(item: &Item) -> String {
        format!("claim {}", item.owner.name)
    }

    /// The range table (if any) whose main-table blocks hold `id`.
    fn range_holding(&self, id: u128) -> Option<&str> {
        let (_, item) = self.main.item_at(id)?;
        (item.claim_type == ClaimType::Range).then_some(item.owner.name.as_str())
    }

    /// Runs a claim; on error the pool is as it was before.
    fn atomic<T>(
        &mut self,
        j: &mut Journal,
        f: impl FnOnce(&mut Self, &mut Journal) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        let mark = j.len();
        let r = f(self, j);
        if r.is_err() {
            self.rollback(j, mark);
        }
        r
    }

    /// A static id: kept when the owner already holds it; otherwise claimed in the main table,
    /// or in the table of the range whose block holds it. Any other id the owner held is
    /// released (changing `spec.id` moves the claim).
    pub fn claim_static(
        &mut self,
        j: &mut Journal,
        owner: &Owner,
        id: u128,
        labels: &BTreeMap<String, String>,
    ) -> Result<Granted, PoolError> {
        self.atomic(j, |p, j| p.claim_static_inner(j, owner, id, labels))
    }

    /// A dynamic id, in the main table (best fit) or in range `range` (lowest free). The owner
    /// keeps what it holds there; else `prefer` (the id in its status, after a restart or a
    /// re-create) if it is free; else the allocator picks.
    pub fn claim_dynamic(
        &mut self,
        j: &mut Journal,
        owner: &Owner,
        range: Option<&str>,
        prefer: Option<u128>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Granted, PoolError> {
        self.atomic(j, |p, j| p.claim_dynamic_inner(j, owner, range, prefer, labels))
    }

    /// A range `[start, end]`: its aligned blocks in the main table and a table of its own
    /// (created, or resized when the owner's range changes). Refused when a block would
    /// overlap another claim's ids, or a shrink would drop ids claimed inside the range.
    pub fn claim_range(
        &mut self,
        j: &mut Journal,
        owner: &Owner,
        start: u128,
        end: u128,
        labels: &BTreeMap<String, String>,
    ) -> Result<Granted, PoolError> {
        self.atomic(j, |p, j| p.claim_range_inner(j, owner, start, end, labels))
    }

    fn claim_static_inner(
        &mut self,
        j: &mut Journal,
        owner: &Owner,
        id: u128,
        labels: &BTreeMap<String, String>,
    ) -> Result<Granted, PoolError> {
        if id > self.max {
            return Err(PoolError::TooLarge { id, max: self.max });
        }
        let table = match self.range_holding(id) {
            Some(range) if range != owner.name => TableRef::Range(range.to_string()),
            _ => TableRef::Main,
        };
        let held = self.held_by(owner);
        let mut keep = false;
        for (t, s, item) in held.into_iter().map(|(t, s, i)| (t, s, i.clone())).collect::<Vec<_>>() {
            if t == table && s == id && item.end == id && item.claim_type == ClaimType::StaticId {
                keep = true;
                self.relabel(j, &t, s, item, labels);
            } else {
                self.drop_item(j, &t, s);
            }
        }
        if !keep {
            self.insert_one(j, &table, id, owner, ClaimType::StaticId, labels)?;
        }
        Ok(Granted::Id { table, id })
    }

    fn insert_one(
        &mut self,
        j: &mut Journal,
        table: &TableRef,
        id: u128,
        owner: &Owner,
        claim_type: ClaimType,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), PoolError> {
        let t = self.table(table).ok_or_else(|| PoolError::NoRange { range: table.to_string() })?;
        if let Some((_, item)) = t.item_at(id) {
            return Err(PoolError::Taken { id, by: Self::describe(item) });
        }
        if id < t.space.lo() || id > t.space.hi() {
            return Err(PoolError::TooLarge { id, max: t.space.hi() });
        }
        let item = Item { end: id, owner: owner.clone(), claim_type, labels: labels.clone() };
        self.put(j, table, id, item).map_err(|_| PoolError::Taken { id, by: "another claim".into() })
    }

    fn claim_dynamic_inner(
        &mut self,
        j: &mut Journal,
        owner: &Owner,
        range: Option<&str>,
        prefer: Option<u128>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Granted, PoolError> {
        let table = match range {
            Some(r) if self.ranges.contains_key(r) => TableRef::Range(r.to_string()),
            Some(r) => return Err(PoolError::NoRange { range: format!("range {r}") }),
            None => TableRef::Main,
        };
        let held: Vec<(TableRef, u128, Item)> =
            self.held_by(owner).into_iter().map(|(t, s, i)| (t, s, i.clone())).collect();
        // Keep one id the owner holds in this table (the one in its status first).
        let kept = held
            .iter()
            .filter(|(t, s, i)| *t == table && i.end == *s && i.claim_type == ClaimType::DynamicId)
            .min_by_key(|(_, s, _)| (Some(*s) != prefer, *s))
            .map(|(_, s, _)| *s);
        for (t, s, item) in &held {
            if Some(*s) == kept && *t == table {
                self.relabel(j, t, *s, item.clone(), labels);
            } else {
                self.drop_item(j, t, *s);
            }
        }
        if let Some(id) = kept {
            return Ok(Granted::Id { table, id });
        }
        let t = self.table(&table).ok_or_else(|| PoolError::NoRange { range: table.to_string() })?;
        let id = match prefer.filter(|&p| t.space.is_free(p, p)) {
            Some(p) => p,
            None => {
                let picked = match table {
                    TableRef::Main => t.space.best_fit(0).map(|b| b.start),
                    TableRef::Range(_) => t.space.lowest_free(),
                };
                picked.ok_or_else(|| PoolError::Exhausted { what: table.to_string() })?
            }
        };
        self.insert_one(j, &table, id, owner, ClaimType::DynamicId, labels)?;
        Ok(Granted::Id { table, id })
    }

    fn claim_range_inner(
        &mut self,
        j: &mut Journal,
        owner: &Owner,
        start: u128,
        end: u128,
        labels: &BTreeMap<String, String>,
    ) -> Result<Granted, PoolError> {
        if start > end {
            return Err(PoolError::Backwards { start, end });
        }
        if end > self.max {
            return Err(PoolError::TooLarge { id: end, max: self.max });
        }
        // Ids claimed inside the range's own table must stay inside its new bounds.
        if let Some(t) = self.ranges.get(&owner.name) {
            if let Some((s, item)) = t.items.iter().find(|(s, i)| **s < start || i.end > end) {
                return Err(PoolError::ShrinkHeld {
                    name: owner.name.clone(),
                    start,
                    end,
                    id: *s,
                    by: Self::describe(item),
                });
            }
        }
        let held: Vec<(TableRef, u128, Item)> =
            self.held_by(owner).into_iter().map(|(t, s, i)| (t, s, i.clone())).collect();
        let blocks = aligned_blocks(start, end);
        let same = held.len() == blocks.len()
            && held.iter().zip(&blocks).all(|((t, s, i), b)| {
                *t == TableRef::Main && *s == b.start && i.end == b.end() && i.claim_type == ClaimType::Range
            });
        if same {
            for (t, s, item) in held {
                self.relabel(j, &t, s, item, labels);
            }
            return Ok(Granted::Range { start, end });
        }
        // Release what the owner held in the main table, then check the new range is free.
        for (t, s, _) in &held {
            if *t == TableRef::Main {
                self.drop_item(j, t, *s);
            }
        }
        if !self.main.space.is_free(start, end) {
            let by: Vec<String> = self
                .main
                .items
                .range(..=end)
                .filter(|(s, i)| i.end >= start && **s <= end)
                .map(|(_, i)| Self::describe(i))
                .collect();
            return Err(PoolError::Overlaps { start, end, by: by.join(", ") });
        }
        for b in blocks {
            let item =
                Item { end: b.end(), owner: owner.clone(), claim_type: ClaimType::Range, labels: labels.clone() };
            self.put(j, &TableRef::Main, b.start, item).map_err(|_| PoolError::Overlaps {
                start,
                end,
                by: "another claim".into(),
            })?;
        }
        self.set_bounds(j, &owner.name, start, end);
        Ok(Granted::Range { start, end })
    }

    /// Releases everything `owner` holds. When the owner is a range, the ids claimed inside it
    /// go too; their owners are returned (their claims lost their ids).
    pub fn release(&mut self, j: &mut Journal, owner: &Owner) -> Vec<Owner> {
        let mut orphaned = Vec::new();
        for (t, s, _) in self.held_by(owner).into_iter().map(|(t, s, i)| (t, s, i.clone())).collect::<Vec<_>>() {
            self.drop_item(j, &t, s);
        }
        if let Some(table) = self.ranges.get(&owner.name) {
            let inside: Vec<(u128, Owner)> = table.items.iter().map(|(s, i)| (*s, i.owner.clone())).collect();
            let t = TableRef::Range(owner.name.clone());
            for (s, o) in inside {
                self.drop_item(j, &t, s);
                if !orphaned.contains(&o) {
                    orphaned.push(o);
                }
            }
            self.remove_table(j, &owner.name);
        }
        orphaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        Owner { name: name.into(), uid: format!("uid-{name}") }
    }

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn id(g: Granted) -> u128 {
        match g {
            Granted::Id { id, .. } => id,
            other => panic!("not an id: {other:?}"),
        }
    }

    /// A VLAN index with kuid's reserved ranges for minID 1 and maxID 4090.
    fn vlan(j: &mut Journal) -> IdPool {
        let mut p = IdPool::new(4095);
        p.claim_range(j, &owner("idx.rangereservedmin"), 0, 0, &no_labels()).unwrap();
        p.claim_range(j, &owner("idx.rangereservedmax"), 4091, 4095, &no_labels()).unwrap();
        p
    }

    #[test]
    fn dynamic_ids_come_by_best_fit_around_reserved_ranges() {
        let j = &mut Journal::default();
        let mut p = vlan(j);
        let got: Vec<u128> = ["a", "b", "c"]
            .iter()
            .map(|n| id(p.claim_dynamic(j, &owner(n), None, None, &no_labels()).unwrap()))
            .collect();
        assert_eq!(got, vec![1, 4090, 2]);
        // Re-applying a claim keeps its id.
        assert_eq!(id(p.claim_dynamic(j, &owner("b"), None, None, &no_labels()).unwrap()), 4090);
        // A re-created claim (new uid) asks for its old id by status and gets it when free.
        p.release(j, &owner("b"));
        let again = Owner { name: "b".into(), uid: "new".into() };
        assert_eq!(id(p.claim_dynamic(j, &again, None, Some(4090), &no_labels()).unwrap()), 4090);
    }

    #[test]
    fn static_ids_conflict_move_and_may_sit_in_reserved_ranges() {
        let j = &mut Journal::default();
        let mut p = vlan(j);
        assert_eq!(id(p.claim_static(j, &owner("s1"), 100, &no_labels()).unwrap()), 100);
        let err = p.claim_static(j, &owner("s2"), 100, &no_labels()).unwrap_err();
        assert_eq!(err, PoolError::Taken { id: 100, by: "claim s1".into() });
        // kuid accepts a static id inside the reserved range (its table holds it).
        let g = p.claim_static(j, &owner("s3"), 4094, &no_labels()).unwrap();
        assert_eq!(g, Granted::Id { table: TableRef::Range("idx.rangereservedmax".into()), id: 4094 });
        // Changing spec.id moves the claim: 100 is free again.
        assert_eq!(id(p.claim_static(j, &owner("s1"), 101, &no_labels()).unwrap()), 101);
        assert_eq!(id(p.claim_static(j, &owner("s2"), 100, &no_labels()).unwrap()), 100);
        assert_eq!(
            p.claim_static(j, &owner("x"), 5000, &no_labels()),
            Err(PoolError::TooLarge { id: 5000, max: 4095 })
        );
    }

    #[test]
    fn kuids_as_mix_with_ranges_that_resize() {
        // reference/kuid.md §5, testas `Mix`, with the range resized as the annotations expect.
        let j = &mut Journal::default();
        let mut p = IdPool::new(u128::from(u32::MAX));
        let l = no_labels();
        assert_eq!(id(p.claim_dynamic(j, &owner("claim1"), None, None, &l).unwrap()), 0);
        assert_eq!(id(p.claim_static(j, &owner("claim2"), 100, &l).unwrap()), 100);
        assert_eq!(id(p.claim_static(j, &owner("claim3"), 4000, &l).unwrap()), 4000);
        p.claim_range(j, &owner("claim4"), 10, 19, &l).unwrap();
        p.claim_range(j, &owner("claim4"), 11, 19, &l).unwrap();
        // 10 was freed by the shrink.
        p.claim_range(j, &owner("claim5"), 5, 10, &l).unwrap();
        let err = p.claim_range(j, &owner("claim6"), 19, 100, &l).unwrap_err();
        assert!(matches!(err, PoolError::Overlaps { .. }), "{err:?}");
        let g = p.claim_static(j, &owner("claim7"), 12, &l).unwrap();
        assert_eq!(g, Granted::Id { table: TableRef::Range("claim4".into()), id: 12 });
        assert_eq!(id(p.claim_static(j, &owner("claim7"), 13, &l).unwrap()), 13);
        let mut dynamic = |n: &str| id(p.claim_dynamic(j, &owner(n), Some("claim4"), None, &l).unwrap());
        assert_eq!(dynamic("claim8"), 11);
        assert_eq!(dynamic("claim9"), 12);
        assert_eq!(dynamic("claim10"), 14);
        assert_eq!(dynamic("claim10"), 14);
        // Re-applying the range unchanged changes nothing.
        let before = p.clone();
        p.claim_range(j, &owner("claim4"), 11, 19, &l).unwrap();
        assert_eq!(p, before);
        // A shrink that would drop a claimed id is refused, naming it.
        let err = p.claim_range(j, &owner("claim4"), 15, 19, &l).unwrap_err();
        assert!(matches!(err, PoolError::ShrinkHeld { id: 11, .. }), "{err:?}");
    }

    #[test]
    fn ranges_exhaust_and_release_what_they_hold() {
        let j = &mut Journal::default();
        let mut p = IdPool::new(4095);
        let l = no_labels();
        p.claim_range(j, &owner("r"), 10, 11, &l).unwrap();
        assert_eq!(id(p.claim_dynamic(j, &owner("a"), Some("r"), None, &l).unwrap()), 10);
        assert_eq!(id(p.claim_dynamic(j, &owner("b"), Some("r"), None, &l).unwrap()), 11);
        assert_eq!(
            p.claim_dynamic(j, &owner("c"), Some("r"), None, &l),
            Err(PoolError::Exhausted { what: "range r".into() })
        );
        assert_eq!(p.release(j, &owner("r")), vec![owner("a"), owner("b")]);
        assert!(p.ranges().is_empty());
        assert_eq!(p, IdPool::new(4095));
    }

    #[test]
    fn rollback_restores_the_pool_exactly() {
        let j = &mut Journal::default();
        let mut p = vlan(j);
        p.claim_range(j, &owner("r"), 200, 399, &no_labels()).unwrap();
        p.claim_dynamic(j, &owner("in"), Some("r"), None, &no_labels()).unwrap();
        let before = p.clone();
        let mark = j.len();
        p.claim_static(j, &owner("s"), 7, &no_labels()).unwrap();
        p.claim_range(j, &owner("r"), 200, 499, &no_labels()).unwrap();
        p.release(j, &owner("r"));
        p.claim_dynamic(j, &owner("d"), None, None, &no_labels()).unwrap();
        assert_ne!(p, before);
        p.rollback(j, mark);
        assert_eq!(p, before);
        p.rollback(j, 0);
        assert_eq!(p, IdPool::new(4095));
    }

    mod props {
        use super::*;
        use crate::ids::space::count;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Static(u8, u16),
            Dynamic(u8, Option<u8>),
            Range(u8, u16, u16),
            Release(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..12, 0u16..80).prop_map(|(o, i)| Op::Static(o, i)),
                (0u8..12, proptest::option::of(0u8..12)).prop_map(|(o, r)| Op::Dynamic(o, r)),
                (0u8..12, 0u16..80, 0u16..12).prop_map(|(o, a, n)| Op::Range(o, a, a + n)),
                (0u8..12).prop_map(Op::Release),
            ]
        }

        fn name(o: u8) -> Owner {
            Owner { name: format!("c{o}"), uid: format!("u{o}") }
        }

        /// Every table's free space matches its items, and no id is held twice.
        fn check(p: &IdPool) -> Result<(), TestCaseError> {
            let mut tables: Vec<(&TableRef, &Table)> = vec![(&TableRef::Main, &p.main)];
            let refs: Vec<TableRef> = p.ranges.keys().map(|k| TableRef::Range(k.clone())).collect();
            for (r, t) in refs.iter().zip(p.ranges.values()) {
                tables.push((r, t));
            }
            for (r, t) in tables {
                let mut used = 0u128;
                let mut last: Option<u128> = None;
                for (s, item) in &t.items {
                    prop_assert!(*s >= t.space.lo() && item.end <= t.space.hi(), "{r:?} item {s} outside");
                    prop_assert!(last.is_none_or(|l| l < *s), "{r:?} items overlap at {s}");
                    prop_assert!(t.space.is_taken(*s, item.end));
                    last = Some(item.end);
                    used += count(*s, item.end);
                }
                prop_assert_eq!(t.space.free() + used, t.space.size());
            }
            Ok(())
        }

        proptest! {
            /// Random claims, re-claims and releases: tables stay consistent, no id is handed
            /// out twice, a failed claim changes nothing, and rolling everything back gives the
            /// empty pool.
            #[test]
            fn claims_never_share_ids_and_roll_back(ops in proptest::collection::vec(op(), 1..60)) {
                let j = &mut Journal::default();
                let mut p = IdPool::new(99);
                let l = BTreeMap::new();
                for op in ops {
                    let before = p.clone();
                    let r = match op {
                        Op::Static(o, id) => p.claim_static(j, &name(o), u128::from(id), &l).map(|_| ()),
                        Op::Dynamic(o, r) => {
                            let range = r.map(|r| format!("c{r}"));
                            p.claim_dynamic(j, &name(o), range.as_deref(), None, &l).map(|_| ())
                        }
                        Op::Range(o, a, b) => p.claim_range(j, &name(o), u128::from(a), u128::from(b), &l).map(|_| ()),
                        Op::Release(o) => { p.release(j, &name(o)); Ok(()) }
                    };
                    if r.is_err() {
                        prop_assert_eq!(&p, &before);
                    }
                    check(&p)?;
                }
                p.rollback(j, 0);
                prop_assert_eq!(p, IdPool::new(99));
            }
        }
    }
}
