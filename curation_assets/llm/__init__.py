"""OpenAI-compatible LLM access shared by the LLM-judged stages: endpoint settings, an async
client with bounded concurrency and retries, a request cache in DuckDB, prompt files and
answer parsers. No Dagster here."""
