"""Test helpers shared by unit tests and benchmarks (a fault-injecting fake OpenAI server)."""
