//! The service's customers, one scope per company (`company:NAME`): the
//! email, name and customer number are stored as envelopes bound to their
//! row, and found again through blind indexes computed by keyd.

use sqlx::{PgPool, Row};

use crate::keyd::{Field, Index, Keyd, Result};

const TABLE: &str = "example_customers";
const SEALED: [&str; 3] = ["email", "name", "number"];
/// Emails are unique per company: 64 bits, a unique constraint.
const EMAIL_BITS: u16 = 64;
/// Customer numbers: 16 bits, so each index value is shared by many
/// numbers (what it leaks: docs/format.md §17); lookups filter the
/// candidates after decrypting them.
const NUMBER_BITS: u16 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub company: String,
    pub email: String,
    pub name: String,
    pub number: String,
}

#[derive(Clone, Copy)]
enum Lookup {
    Email,
    Number,
}

pub struct Customers {
    db: PgPool,
    keyd: Keyd,
}

fn scope(company: &str) -> String {
    format!("company:{company}")
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

impl Customers {
    pub fn new(db: PgPool, keyd: Keyd) -> Self {
        Self { db, keyd }
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// Creates the table (idempotent).
    pub async fn install(&self) -> Result<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS example_customers (
                id TEXT PRIMARY KEY,
                company TEXT NOT NULL,
                email_index TEXT NOT NULL,
                number_index TEXT NOT NULL,
                email TEXT NOT NULL,
                name TEXT NOT NULL,
                number TEXT NOT NULL,
                UNIQUE (company, email_index));
             CREATE INDEX IF NOT EXISTS example_customers_number
                ON example_customers (company, number_index);",
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// A company's scope (idempotent).
    pub async fn add_company(&self, company: &str) -> Result<()> {
        self.keyd.ensure_scope(&scope(company)).await
    }

    /// The blind-index value of `value` for one of the lookups.
    async fn index_value(&self, lookup: Lookup, company: &str, value: &str) -> Result<String> {
        let scope = scope(company);
        let (index, bits, normalize): (&str, u16, &[&str]) = match lookup {
            Lookup::Email => ("email", EMAIL_BITS, &["trim", "lowercase"]),
            Lookup::Number => ("number", NUMBER_BITS, &["digits-only"]),
        };
        let item = Index {
            scope: &scope,
            table: TABLE,
            index,
            columns: &[index],
            bits,
            normalize,
            values: vec![value],
        };
        Ok(self.keyd.index(&[item]).await?.remove(0))
    }

    /// Adds a customer; returns its id. The id is drawn before sealing,
    /// since every envelope is bound to its row.
    pub async fn add(
        &self,
        company: &str,
        email: &str,
        name: &str,
        number: &str,
    ) -> Result<String> {
        let id: String = sqlx::query_scalar("SELECT gen_random_uuid()::text")
            .fetch_one(&self.db)
            .await?;
        let scope = scope(company);
        let email = email.trim();
        let fields: Vec<Field> = SEALED
            .iter()
            .zip([email, name, number])
            .map(|(column, value)| Field {
                scope: &scope,
                table: TABLE,
                column,
                row: &id,
                value,
            })
            .collect();
        let sealed = self.keyd.encrypt(&fields).await?;
        let email_index = self.index_value(Lookup::Email, company, email).await?;
        let number_index = self.index_value(Lookup::Number, company, number).await?;
        sqlx::query(
            "INSERT INTO example_customers
                (id, company, email_index, number_index, email, name, number)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(company)
        .bind(email_index)
        .bind(number_index)
        .bind(&sealed[0])
        .bind(&sealed[1])
        .bind(&sealed[2])
        .execute(&self.db)
        .await?;
        Ok(id)
    }

    /// The customer of `company` with this email (case and spaces ignored).
    pub async fn find_by_email(&self, company: &str, email: &str) -> Result<Option<Customer>> {
        let index = self.index_value(Lookup::Email, company, email).await?;
        let rows = self.rows(Lookup::Email, company, &index).await?;
        let wanted = email.trim().to_lowercase();
        Ok(rows.into_iter().find(|c| c.email.to_lowercase() == wanted))
    }

    /// The customers of `company` with this number (digits compared).
    pub async fn find_by_number(&self, company: &str, number: &str) -> Result<Vec<Customer>> {
        let index = self.index_value(Lookup::Number, company, number).await?;
        let rows = self.rows(Lookup::Number, company, &index).await?;
        let wanted = digits(number);
        Ok(rows
            .into_iter()
            .filter(|c| digits(&c.number) == wanted)
            .collect())
    }

    /// One customer by id, decrypted.
    pub async fn get(&self, id: &str) -> Result<Option<Customer>> {
        let rows = sqlx::query("SELECT * FROM example_customers WHERE id = $1")
            .bind(id)
            .fetch_all(&self.db)
            .await?;
        Ok(self.open(rows).await?.pop())
    }

    /// The rows whose index equals `value`, decrypted in one request: the
    /// candidates of a lookup.
    async fn rows(&self, index: Lookup, company: &str, value: &str) -> Result<Vec<Customer>> {
        let sql = match index {
            Lookup::Email => {
                "SELECT * FROM example_customers WHERE company = $1 AND email_index = $2 ORDER BY id"
            }
            Lookup::Number => {
                "SELECT * FROM example_customers WHERE company = $1 AND number_index = $2 ORDER BY id"
            }
        };
        let rows = sqlx::query(sql)
            .bind(company)
            .bind(value)
            .fetch_all(&self.db)
            .await?;
        self.open(rows).await
    }

    async fn open(&self, rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<Customer>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut stored = Vec::new();
        for row in &rows {
            let id: String = row.try_get("id")?;
            let company: String = row.try_get("company")?;
            let mut sealed = Vec::new();
            for column in SEALED {
                sealed.push(row.try_get::<String, _>(column)?);
            }
            stored.push((id, scope(&company), company, sealed));
        }
        let items: Vec<Field> = stored
            .iter()
            .flat_map(|(id, scope, _, sealed)| {
                SEALED.iter().zip(sealed).map(move |(column, value)| Field {
                    scope,
                    table: TABLE,
                    column,
                    row: id,
                    value,
                })
            })
            .collect();
        // keyd takes at most 1000 items per request.
        let mut plain = Vec::with_capacity(items.len());
        for chunk in items.chunks(999) {
            plain.extend(self.keyd.decrypt(chunk).await?);
        }
        let mut plain = plain.into_iter();
        let mut next = || plain.next().unwrap_or_default();
        Ok(stored
            .into_iter()
            .map(|(id, _, company, _)| Customer {
                id,
                company,
                email: next(),
                name: next(),
                number: next(),
            })
            .collect())
    }
}
