"""The system of record: schema migrations and the SQL that reads and writes PostgreSQL."""
