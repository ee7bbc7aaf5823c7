{# Models land in the schema they name (cdp, core, staging), not "<target>_<schema>":
   the public tables of the contract live in `cdp`. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
