"""Everything after the call: records, uploads, jobs, analysis."""
