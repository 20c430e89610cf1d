"""Static Marketo metadata: standard activity types, seeded custom types and lead fields.

The standard types follow Marketo's documentation; where it lists no attributes, realistic ones are invented
so that every type the generator emits has a complete description in types.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

CUSTOM_TYPE_FIRST_ID = 100000
NEW_LEAD = 12
CHANGE_DATA_VALUE = 13
DELETE_LEAD = 37
CUSTOM_DATA_TYPES = (
    "string", "boolean", "integer", "float", "link", "email", "currency", "date", "datetime", "phone", "text",
)


@dataclass(frozen=True)
class AttributeDef:
    """One attribute of an activity type.

    Attributes:
        name: Display name, as records and types.json show it.
        data_type: Marketo data type (string, integer, boolean, datetime, ...).
        api_name: API name; only custom types have one.
        description: Free text; only custom types render it.
    """

    name: str
    data_type: str
    api_name: str | None = None
    description: str = ""


@dataclass(frozen=True)
class ActivityTypeDef:
    """A standard activity type as Get Activity Types describes it."""

    id: int
    name: str
    description: str
    primary: AttributeDef | None
    attributes: tuple[AttributeDef, ...]


@dataclass(frozen=True)
class LeadField:
    """A lead field as Describe Lead2 lists it."""

    id: int
    name: str
    display_name: str
    data_type: str
    length: int | None = None
    updateable: bool = True
    crm_managed: bool = False


def _attrs(data_type: str, *names: str) -> tuple[AttributeDef, ...]:
    return tuple(AttributeDef(name, data_type) for name in names)


def _type(type_id: int, name: str, description: str, primary: AttributeDef | None,
          *attribute_groups: tuple[AttributeDef, ...]) -> ActivityTypeDef:
    attributes = tuple(attribute for group in attribute_groups for attribute in group)
    return ActivityTypeDef(type_id, name, description, primary, attributes)


_WEB = _attrs("string", "Client IP Address", "Query Parameters", "Referrer URL", "User Agent")
_EMAIL_RUN = _attrs("integer", "Campaign Run ID", "Choice Number", "Step ID", "Test Variant")
_MAILING = AttributeDef("Mailing ID", "integer")
_OPEN_EMAIL = (*_EMAIL_RUN, *_attrs("string", "Device", "Platform", "User Agent"),
               *_attrs("boolean", "Has Predictive", "Is Mobile Device"))
_CHANGE_REASON = _attrs("string", "Reason", "Source")

STANDARD_TYPES: tuple[ActivityTypeDef, ...] = (
    _type(1, "Visit Webpage", "User visits a web page", AttributeDef("Webpage ID", "integer"),
          _attrs("string", "Client IP Address", "Query Parameters", "Referrer URL", "Search Engine",
                 "Search Query", "User Agent", "Webpage URL"),
          _attrs("boolean", "Personalized URL")),
    _type(2, "Fill Out Form", "User fills out and submits form on web page", AttributeDef("Webform ID", "integer"),
          _WEB, _attrs("text", "Form Fields"), _attrs("integer", "Webpage ID")),
    _type(3, "Click Link", "User clicks link on a page", AttributeDef("Link ID", "integer"),
          _WEB, _attrs("integer", "Webpage ID")),
    _type(6, "Send Email", "Send Marketo Email to a person", _MAILING, _EMAIL_RUN, _attrs("boolean", "Has Predictive")),
    _type(7, "Email Delivered", "Marketo Email is delivered to a person", _MAILING,
          _EMAIL_RUN, _attrs("boolean", "Has Predictive")),
    _type(8, "Email Bounced", "Marketo Email is bounced for a person", _MAILING,
          _EMAIL_RUN, _attrs("boolean", "Has Predictive"),
          _attrs("string", "Category", "Details", "Email", "Subcategory")),
    _type(9, "Unsubscribe Email", "Person unsubscribes from Marketo Emails", _MAILING,
          _attrs("integer", "Campaign Run ID", "Test Variant", "Webform ID", "Webpage ID"), _WEB,
          _attrs("text", "Form Fields"), _attrs("boolean", "Has Predictive")),
    _type(10, "Open Email", "User opens Marketo Email", _MAILING, _OPEN_EMAIL),
    _type(11, "Click Email", "User clicks on a link in a Marketo Email", _MAILING,
          _EMAIL_RUN, _attrs("string", "Device", "Platform", "User Agent", "Link", "Link ID"),
          _attrs("boolean", "Is Predictive", "Is Mobile Device")),
    _type(NEW_LEAD, "New Lead", "New person/record is added to the lead database", None,
          _attrs("date", "Created Date"),
          _attrs("string", "Form Name", "Lead Source", "List Name", "SFDC Type", "Source Type", "API Method Name",
                 "Modifying User", "Request Id")),
    # Not listed: the "Lead ID" attribute Get Lead Changes records carry (records.py). Marketo documents no
    # attributes of this type, so the sandbox plays metadata that is silent on it.
    _type(CHANGE_DATA_VALUE, "Change Data Value", "Changed attribute value for a person",
          AttributeDef("Attribute Name", "integer"), _attrs("string", "New Value", "Old Value"), _CHANGE_REASON),
    _type(22, "Change Score", "Changed score value for a person", AttributeDef("Score Name", "integer"),
          _attrs("string", "Change Value"), _attrs("integer", "New Value", "Old Value"), _CHANGE_REASON),
    _type(24, "Add to List", "Person is added to a list", AttributeDef("List ID", "integer"),
          _attrs("string", "Source", "API Method Name", "Modifying User", "Request Id")),
    _type(DELETE_LEAD, "Delete Lead", "Person is deleted from the lead database", AttributeDef("Lead ID", "integer"),
          _attrs("string", "Client IP Address", "Form Name", "Remove from CRM", "API Method Name", "Modifying User",
                 "Request Id")),
    _type(46, "Interesting Moment", "Interesting moment for a person", AttributeDef("Milestone ID", "integer"),
          _attrs("string", "Type", "Description", "Source"), _attrs("datetime", "Date")),
    _type(104, "Change Status in Progression", "Change a person's program status",
          AttributeDef("Program ID", "integer"),
          _attrs("integer", "Program Member ID"), _attrs("string", "Acquired By"),
          _attrs("string", "Old Status"), _attrs("integer", "Old Status ID"), _attrs("string", "New Status"),
          _attrs("integer", "New Status ID"), _attrs("boolean", "Success"), _attrs("string", "Reason")),
)

STANDARD_TYPES_BY_ID = {activity_type.id: activity_type for activity_type in STANDARD_TYPES}


@dataclass
class CustomTypeVersion:
    """One version (approved or draft) of a custom activity type; attributes keyed by apiName."""

    name: str
    trigger_name: str
    filter_name: str
    primary: AttributeDef
    description: str = ""
    attributes: dict[str, AttributeDef] = field(default_factory=dict)


def _custom(api_name: str, name: str, data_type: str, description: str = "") -> AttributeDef:
    return AttributeDef(name, data_type, api_name, description)


def custom_api_name(attribute: AttributeDef) -> str:
    """The API name of a custom attribute, which every custom attribute has."""
    if attribute.api_name is None:
        raise ValueError(f"attribute {attribute.name!r} has no API name: it is no custom attribute")
    return attribute.api_name


SEEDED_CUSTOM_TYPES: dict[str, CustomTypeVersion] = {
    "attendConference": CustomTypeVersion(
        name="Attend Conference", trigger_name="Attends Conference", filter_name="Attended Conference",
        description="Person attended a conference session",
        primary=_custom("conferenceName", "Conference Name", "string", "Name of the conference"),
        attributes={custom_api_name(a): a for a in (
            _custom("sessionTitle", "Session Title", "string"),
            _custom("attendedAt", "Attended At", "datetime"),
            _custom("badgeScanned", "Badge Scanned", "boolean"),
            _custom("sessionRating", "Session Rating", "float"),
            _custom("seatsBooked", "Seats Booked", "integer"),
            _custom("registrationDate", "Registration Date", "date"),
        )},
    ),
    "productUsage": CustomTypeVersion(
        name="Product Usage", trigger_name="Uses Product", filter_name="Used Product",
        description="Usage reported by the product",
        primary=_custom("productName", "Product Name", "string"),
        attributes={custom_api_name(a): a for a in (
            _custom("usageMinutes", "Usage Minutes", "integer"),
            _custom("usageScore", "Usage Score", "float"),
            _custom("lastSeenAt", "Last Seen At", "datetime"),
            _custom("trialUser", "Trial User", "boolean"),
            _custom("featureName", "Feature Name", "string"),
            _custom("monthlySpend", "Monthly Spend", "currency"),
        )},
    ),
}

LEAD_FIELDS: tuple[LeadField, ...] = (
    LeadField(1, "id", "Id", "integer", updateable=False),
    LeadField(2, "company", "Company Name", "string", 255),
    LeadField(3, "site", "Site", "string", 255),
    LeadField(4, "billingStreet", "Billing Address", "text"),
    LeadField(5, "billingCity", "Billing City", "string", 255),
    LeadField(6, "billingCountry", "Billing Country", "string", 255),
    LeadField(7, "mainPhone", "Main Phone", "phone", 255),
    LeadField(8, "annualRevenue", "Annual Revenue", "currency"),
    LeadField(9, "numberOfEmployees", "Num Employees", "integer"),
    LeadField(10, "industry", "Industry", "string", 255),
    LeadField(11, "sicCode", "SIC Code", "string", 40),
    LeadField(20, "salutation", "Salutation", "string", 255),
    LeadField(21, "firstName", "First Name", "string", 255),
    LeadField(22, "middleName", "Middle Name", "string", 255),
    LeadField(23, "lastName", "Last Name", "string", 255),
    LeadField(24, "email", "Email Address", "email", 255),
    LeadField(25, "phone", "Phone Number", "phone", 255),
    LeadField(26, "mobilePhone", "Mobile Phone Number", "phone", 255),
    LeadField(27, "title", "Job Title", "string", 255),
    LeadField(28, "city", "City", "string", 255),
    LeadField(29, "country", "Country", "string", 255),
    LeadField(30, "postalCode", "Postal Code", "string", 255),
    LeadField(31, "website", "Website", "url", 255),
    LeadField(32, "dateOfBirth", "Date of Birth", "date"),
    LeadField(33, "doNotCall", "Do Not Call", "boolean"),
    LeadField(34, "unsubscribed", "Unsubscribed", "boolean"),
    LeadField(35, "leadScore", "Lead Score", "integer"),
    LeadField(36, "leadStatus", "Lead Status", "string", 255, crm_managed=True),
    LeadField(37, "leadSource", "Lead Source", "string", 255, crm_managed=True),
    LeadField(38, "rating", "Lead Rating", "string", 255, crm_managed=True),
    LeadField(39, "preferredLanguage", "Preferred Language", "string", 255),
    LeadField(40, "createdAt", "Created At", "datetime", updateable=False),
    LeadField(41, "updatedAt", "Updated At", "datetime", updateable=False),
    LeadField(42, "acquisitionDate", "Acquisition Date", "datetime"),
    LeadField(43, "sfdcType", "SFDC Type", "string", 255, updateable=False, crm_managed=True),
)

LEAD_FIELDS_BY_NAME = {lead_field.name: lead_field for lead_field in LEAD_FIELDS}


def _type_attribute_json(attribute: AttributeDef) -> dict[str, str]:
    rendered = {"name": attribute.name, "dataType": attribute.data_type}
    if attribute.api_name:
        rendered["apiName"] = attribute.api_name
    return rendered


def activity_type_json(type_id: int, name: str, description: str, primary: AttributeDef | None,
                       attributes: Iterable[AttributeDef], api_name: str | None = None) -> dict[str, Any]:
    """Render a type as Get Activity Types lists it; New Lead has no primaryAttribute, as on Marketo.

    Custom types carry their apiName (the swagger ActivityType has the property) but no other marker.
    """
    rendered: dict[str, Any] = {"id": type_id, "name": name, "description": description}
    if api_name:
        rendered["apiName"] = api_name
    if primary is not None:
        rendered["primaryAttribute"] = _type_attribute_json(primary)
    rendered["attributes"] = [_type_attribute_json(attribute) for attribute in attributes]
    return rendered


def standard_type_json(activity_type: ActivityTypeDef) -> dict[str, Any]:
    """Render a standard type for Get Activity Types."""
    return activity_type_json(activity_type.id, activity_type.name, activity_type.description,
                              activity_type.primary, activity_type.attributes)


def custom_type_json(type_id: int, api_name: str, version: CustomTypeVersion) -> dict[str, Any]:
    """Render the approved version of a custom type for Get Activity Types."""
    return activity_type_json(type_id, version.name, version.description, version.primary,
                              version.attributes.values(), api_name)


def lead_field_json(lead_field: LeadField) -> dict[str, Any]:
    """Render a lead field as Describe Lead2 lists it."""
    rendered: dict[str, Any] = {"name": lead_field.name, "displayName": lead_field.display_name,
                                "dataType": lead_field.data_type}
    if lead_field.length is not None:
        rendered["length"] = lead_field.length
    rendered.update({"updateable": lead_field.updateable, "crmManaged": lead_field.crm_managed})
    return rendered
