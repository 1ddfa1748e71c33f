raise ImportError("agentflow_broken_plugin is broken on purpose (a test fixture)")
