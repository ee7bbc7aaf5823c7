-- Survivorship keeps exactly one value per person and trait.
select person_id, trait, count(*) as values_kept
from {{ ref('person_trait_values') }}
group by person_id, trait
having count(*) > 1
