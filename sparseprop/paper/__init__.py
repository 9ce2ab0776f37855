"""The paper's pipeline: experiments, profiles, costs, collected tables, figures, claim verdicts and the report."""
