"""The core contracts: Step, Observed, StepResult, Ledger, errors, progress, secrets."""
