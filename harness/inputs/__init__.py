"""Task spec -> examples -> prompts: the task, template and group files (read with bounds), the data of a task's
splits, the sandboxed templates that render prompts, and which demonstrations each test item is shown."""
