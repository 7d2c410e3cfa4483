"""What runs inside every job: seeding before the research code, the record after it."""
