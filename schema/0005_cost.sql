-- tracegate store, version 5: what each call cost.
--
-- * `traces.cost_usd`: the call's cost in USD, computed when its record was
--   built from its usage and the `[[prices]]` entry of its model; NULL when
--   no price matched or the call had no usage (never a guessed 0). Rows
--   written before this version have NULL. Sessions and runs sum it when
--   they are read (`SUM` skips NULL; all NULL sums to NULL).
--
ALTER TABLE traces ADD COLUMN cost_usd REAL;
