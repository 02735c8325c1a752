"""The checker: passes from a syntax tree to the IR, run in order by `compound.compiler.check`.

1. `declare`: collect every declaration's name and kind, and each plate's size;
2. `lower`: lower each statement to IR components and nodes, binding
   arguments (`bind`) and checking each call against its signature, options and
   template (`calls`);
3. `graph`: cycles, outputs that depend on no input, unused nodes and
   declarations, and the nodes' topological order.

Every pass reports into one `Report`; nothing stops at the first error.
"""
