"""netc's compiler: `.net` text -> AST -> IR (-> joint IR -> fused IR -> source, in later stages)."""
