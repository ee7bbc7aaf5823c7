{#- Computed traits (config/traits.yaml `computed:`, checked by cdp_assets.profiles.computed) compiled to SQL.
    Each declaration aggregates rows of `events` (core.person_events) or `purchases` (core.person_purchases)
    per person. The aggregate runs in person_computed_base; what depends on the build time alone (days since)
    is applied in person_computed_traits, so an unchanged person needs no recomputation for it. -#}

{% macro computed_over(over) -%}
    {%- do return({
        'events': {'time': 'occurred_at', 'id': 'event_id',
                   'columns': ['event_name', 'event_type', 'source', 'occurred_at']},
        'purchases': {'time': 'purchased_at', 'id': 'purchase_id',
                      'columns': ['purchase_id', 'channel', 'amount', 'purchased_at', 'items']},
    }[over]) -%}
{%- endmacro %}

{# The value a trait aggregates: a column, or an event property read from `properties` as its type. #}
{% macro computed_value(spec) -%}
    {%- set prop = spec.get('property') -%}
    {%- if prop is none -%}
        null
    {%- elif prop in computed_over(spec.over).columns -%}
        {{ prop }}
    {%- else -%}
        {%- set type = spec.get('type') or ('number' if spec.aggregate == 'sum' else 'string') -%}
        try_cast({{ json_text_at_key('properties', prop) }} as {{ {'number': 'double', 'string': t_string(), 'timestamp': 'timestamp'}[type] }})
    {%- endif -%}
{%- endmacro %}

{# The rows a trait counts: its event names and (unless window=false) its window. #}
{% macro computed_filter(spec, window=true) -%}
    {%- set events = [spec.event] if spec.get('event') is string else spec.get('event', []) -%}
    true
    {%- if events %} and event_name in ({% for e in events %}'{{ e }}'{{ ", " if not loop.last }}{% endfor %}){% endif %}
    {%- if window and spec.get('within_days') %} and {{ computed_over(spec.over).time }} >= {{ days_before(utc_now(), spec.within_days) }}{% endif %}
{%- endmacro %}

{# The aggregate of one trait over a person's rows (person_computed_base). #}
{% macro computed_aggregate(spec) -%}
    {{ return(adapter.dispatch('computed_aggregate', 'cdp')(spec)) }}
{%- endmacro %}
{% macro default__computed_aggregate(spec) -%}
    {%- set v = computed_value(spec) -%}
    {%- set over = computed_over(spec.over) -%}
    {%- set f = computed_filter(spec) -%}
    {%- set a = spec.aggregate -%}
    {%- if a == 'count' and spec.get('property') is none -%} count(*) filter (where {{ f }})
    {%- elif a == 'count' -%} count({{ v }}) filter (where {{ f }})
    {#- Summed as decimals: a double sum depends on the order rows arrive in, and an incremental run must equal a full one. -#}
    {%- elif a == 'sum' -%} coalesce(sum(({{ v }})::decimal(38, 6)) filter (where {{ f }}), 0)::double
    {%- elif a in ('min', 'max') -%} {{ a }}({{ v }}) filter (where {{ f }})
    {%- elif a in ('first', 'last') -%}
        arg_{{ 'min' if a == 'first' else 'max' }}({{ v }}, ({{ over.time }}, {{ over.id }})) filter (where {{ f }} and {{ v }} is not null)
    {%- elif a == 'distinct_count' -%} count(distinct {{ v }}) filter (where {{ f }})
    {%- elif a == 'distinct_values' and spec.property == 'items' -%}
        list_sort(list_distinct(flatten(list({{ v }}) filter (where {{ f }}))))
    {%- elif a == 'distinct_values' -%} list_sort(list_distinct(list({{ v }}) filter (where {{ f }})))
    {%- elif a == 'most_frequent' -%}
        list_sort(list_transform(map_entries(histogram({{ v }}) filter (where {{ f }})),
                                 e -> {'n': -(e.value::bigint), 'v': e.key}))[1].v
    {%- elif a == 'days_since_first' -%} min({{ over.time }}) filter (where {{ f }})
    {%- elif a == 'days_since_last' -%} max({{ over.time }}) filter (where {{ f }})
    {%- else -%} {{ exceptions.raise_compiler_error("computed trait " ~ spec.aggregate ~ ": unknown aggregate") }}
    {%- endif -%}
{%- endmacro %}

{#- Spark: min_by/max_by for arg_min/arg_max, collect_list for list (which drops nulls, as list_distinct does),
    mode(v, true) for the histogram's most frequent value (ties to the smallest value, as its sort does). -#}
{% macro spark__computed_aggregate(spec) -%}
    {%- set v = computed_value(spec) -%}
    {%- set over = computed_over(spec.over) -%}
    {%- set f = computed_filter(spec) -%}
    {%- set a = spec.aggregate -%}
    {%- if a in ('first', 'last') -%}
        {{ 'min_by' if a == 'first' else 'max_by' }}({{ v }}, struct({{ over.time }}, {{ over.id }})) filter (where {{ f }} and {{ v }} is not null)
    {%- elif a == 'distinct_values' and spec.property == 'items' -%}
        array_sort(array_distinct(filter(flatten(collect_list({{ v }}) filter (where {{ f }})), x -> x is not null)))
    {%- elif a == 'distinct_values' -%} array_sort(array_distinct(collect_list({{ v }}) filter (where {{ f }})))
    {%- elif a == 'most_frequent' -%} mode({{ v }}, true) filter (where {{ f }})
    {%- else -%} {{ default__computed_aggregate(spec) }}
    {%- endif -%}
{%- endmacro %}

{# A person with no rows: counts are 0, lists empty, the rest unknown. #}
{% macro computed_default(spec, expression) -%}
    {%- if spec.aggregate in ('count', 'distinct_count') -%} coalesce({{ expression }}, 0)
    {%- elif spec.aggregate == 'sum' -%} coalesce({{ expression }}, 0)::double
    {%- elif spec.aggregate == 'distinct_values' -%} coalesce({{ expression }}, {{ empty_strings() }})
    {%- else -%} {{ expression }}
    {%- endif -%}
{%- endmacro %}

{# What a trait is at build time, from its stored aggregate (person_computed_traits). #}
{% macro computed_final(spec, column) -%}
    {%- if spec.aggregate in ('days_since_first', 'days_since_last') -%}
        {{ days_between(column, utc_now()) }}
    {%- else -%} {{ column }}
    {%- endif -%}
{%- endmacro %}

{# The windowed traits, one per distinct (source, days, event filter): a person with a row that has left
   one of these windows since their traits were computed needs them recomputed. #}
{% macro computed_windows(traits) -%}
    {%- set windows = {} -%}
    {%- for name, spec in traits.items() if spec.get('within_days') -%}
        {%- set key = spec.over ~ '|' ~ (spec.within_days | int) ~ '|' ~ computed_filter(spec, window=false) -%}
        {%- if key not in windows %}{% do windows.update({key: spec}) %}{% endif -%}
    {%- endfor -%}
    {%- do return(windows.values() | list) -%}
{%- endmacro %}
